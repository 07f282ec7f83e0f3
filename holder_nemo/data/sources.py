"""Where each training / evaluation set comes from (public Hugging Face datasets) and what it must contain.

Row counts are the paper's (arXiv 2605.12058 §4.1): MATH levels 3-5 8,523 (the Dr.GRPO / understand-r1-zero
training set ``math_lvl3to5_8k``, the same 8,523 problems in the same order as SimpleRL-Zoo's
``simplelr_qwen_level3to5``), AIME24 30, AMC 83, MATH500 500, Minerva 272, OlympiadBench 675, and AIME25 30 (the
Qwen3 tables). ``revision`` is what is requested; the commit actually downloaded is recorded in ``manifest.json``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """One output file: the upstream dataset, how to read it, and the row count it must have."""

    name: str  # output file stem: OUT_DIR/<name>.jsonl
    role: str  # "train" or "eval"
    repo_id: str
    split: str
    expected_rows: int
    problem_fields: tuple[str, ...]  # first present (dotted paths allowed) is the problem text
    answer_fields: tuple[str, ...]  # first present is the reference answer
    configs: tuple[str | None, ...] = (None,)  # HF configs concatenated in this order
    data_files: str | None = None  # a file inside the repo instead of a named config
    revision: str = "main"


SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        # MATH levels 3-5, the Dr.GRPO/oat training set (same problems and order as math_lvl3to5_8k)
        DatasetSpec(
            name="math_lvl3to5",
            role="train",
            repo_id="hkust-nlp/SimpleRL-Zoo-Data",
            data_files="simplelr_qwen_level3to5/train.parquet",
            split="train",
            expected_rows=8523,
            problem_fields=("extra_info.question", "question", "problem"),
            answer_fields=("extra_info.answer", "reward_model.ground_truth", "answer", "gt_answer"),
        ),
        # AIME 2024 I + II (also NeMo RL's AIME2024 source)
        DatasetSpec(
            name="aime24",
            role="eval",
            repo_id="HuggingFaceH4/aime_2024",
            split="train",
            expected_rows=30,
            problem_fields=("problem",),
            answer_fields=("answer",),
        ),
        # AMC 12 2022 + 2023; answers are stored as floats (142.0 -> '142')
        DatasetSpec(
            name="amc",
            role="eval",
            repo_id="AI-MO/aimo-validation-amc",
            split="train",
            expected_rows=83,
            problem_fields=("problem",),
            answer_fields=("answer",),
        ),
        # the MATH500 subset of the MATH test set (Lightman et al.)
        DatasetSpec(
            name="math500",
            role="eval",
            repo_id="HuggingFaceH4/MATH-500",
            split="test",
            expected_rows=500,
            problem_fields=("problem",),
            answer_fields=("answer",),
        ),
        # Minerva MATH (OCWCourses), 272 problems
        DatasetSpec(
            name="minerva",
            role="eval",
            repo_id="math-ai/minervamath",
            split="test",
            expected_rows=272,
            problem_fields=("question", "problem"),
            answer_fields=("answer",),
        ),
        # open-ended, text-only, English maths competition subset; final_answer[0] without $...$
        DatasetSpec(
            name="olympiadbench",
            role="eval",
            repo_id="Hothan/OlympiadBench",
            configs=("OE_TO_maths_en_COMP",),
            split="train",
            expected_rows=675,
            problem_fields=("question", "problem"),
            answer_fields=("final_answer", "answer"),
        ),
        # AIME 2025 I + II (Qwen3 tables, pass@8; also NeMo RL's AIME2025 source)
        DatasetSpec(
            name="aime25",
            role="eval",
            repo_id="opencompass/AIME2025",
            configs=("AIME2025-I", "AIME2025-II"),
            split="test",
            expected_rows=30,
            problem_fields=("question", "problem"),
            answer_fields=("answer",),
        ),
    )
}

ALL_NAMES: tuple[str, ...] = tuple(SPECS)
