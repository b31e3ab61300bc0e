"""Landing (local folder, S3, streams) → raw → Spark cleaning with quarantine → GX validation → the per-day
quality record."""
