"""The artist process: its session with the server, the round runner, and its masking, CKKS and
privacy sides; its durable state is owner-only."""
