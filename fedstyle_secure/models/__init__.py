"""Style encoders: the frozen EfficientNet-Lite0 backbone's style statistics, the trainable
head, flat parameter vectors and embeddings.  Below everything that trains or aggregates.

Public API: :mod:`.backbone` (``STYLE_FEATURE_DIM``), :mod:`.inputs` (``InputBank``,
``build_input_bank``), :mod:`.heads` (``StyleModel``), :mod:`.factory` (``EncoderConfig``,
``make_model``), :mod:`.params` (``get_flat_params``, ``set_flat_params``), :mod:`.embed`.
"""
