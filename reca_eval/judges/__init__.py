"""LLM judges for the editing benchmarks: rubric prompts built from the benchmarks' own published files,
two backends that answer them (an OpenAI-compatible HTTP client and a local transformers VLM), a response
cache, and the parsers that turn replies into scores (or into counted skips, never into zeros).

Modules: ``rubrics`` (read the fetched rubric files), ``backend`` (the reply type and the judge-call
protocol), ``cache`` (responses keyed by judge snapshot + prompt hash + image hashes),
``openai_client``, ``local_vlm``, ``imgedit`` and ``gedit`` (per-benchmark prompting and parsing).
"""
