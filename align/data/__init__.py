"""Ranked data: reading files and hub datasets in every supported format, validating rows, tokenizing lists and
prompts, collating and packing them into batches. Nothing here imports a model, a loss or a trainer."""
