"""Model: where a model comes from and how it is loaded (docs/design.md §9).

Sources and loading (``loading``: hub, local, Omni thinker), the PyPI-GGUF
route (``gguf``) and the hub fetch (``hub``); the audio features an Omni
model hears (``audio``); constrained decoding of the answer
(``constrained``); tiny random models for tests (``tiny_models``,
``tiny_omni``). Model libraries are imported inside functions only.
"""
