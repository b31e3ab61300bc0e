"""The built-in demo data set: a deterministic generator of daily landed files (`python -m kennel.demo`).

Kept apart from the platform: nothing in ingestion, training, serving or monitoring imports it.
"""

from kennel.demo.generator import (
    DEMO_FOLDER_MARKER,
    ROW_REASONS,
    WRONG_TYPE_BOOLEAN,
    WRONG_TYPE_NUMERIC,
    GenerationReport,
    NotADemoFolder,
    frame_to_rows,
    generate,
    generate_frame,
    main,
)

__all__ = [
    "DEMO_FOLDER_MARKER",
    "ROW_REASONS",
    "WRONG_TYPE_BOOLEAN",
    "WRONG_TYPE_NUMERIC",
    "GenerationReport",
    "NotADemoFolder",
    "frame_to_rows",
    "generate",
    "generate_frame",
    "main",
]
