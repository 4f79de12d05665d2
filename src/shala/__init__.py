"""shala: regenerate SHALA-LLM results and apply the method to annotated data.

SHALA-LLM trains an instruction-tuned LLM with GRPO to verbalise the
*distribution* of human judgements, rewarding agreement with the annotator
distribution, scaled by how ambiguous the item is.
"""

__version__ = "0.1.0"
