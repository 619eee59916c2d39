"""LLM-as-judge evaluations built on batchery jobs: specs, prompts, verdicts, jury, statistics, report.

The evaluation layer only builds requests and reads results; it never talks to a provider.
"""
