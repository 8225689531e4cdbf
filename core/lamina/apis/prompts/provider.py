"""The prompts API has no providers: its router keeps prompts in the stack's storage itself (see `router.py`), so a
run config needs no `providers.prompts` entry for `/v1/prompts` to work."""
