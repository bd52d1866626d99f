"""`sensorium bench`: one evaluation harness for multiple choice, yes/no, open VQA, captioning, retrieval and
zero-shot classification, reading the community's formats from local files, deterministic (no random fallback,
no LLM judge), with World-Bench as its built-in suite. Models are taken as objects (anything with `.chat`,
`.model` or `.embed`); loading them by path is the CLI's job."""

from sensorium.eval.bench.api import run_suite, scorer_for
from sensorium.eval.bench.circular import Unit, rotate, units
from sensorium.eval.bench.extract import EXTRACTORS, Extraction, choice, first_char, yes_no
from sensorium.eval.bench.formats import read_rows, read_task, write_rows
from sensorium.eval.bench.items import Item, Media, Task
from sensorium.eval.bench.kinds import KINDS
from sensorium.eval.bench.runner import run_task
from sensorium.eval.bench.suite import BUILTINS, load_manifest, resolve

__all__ = ["BUILTINS", "EXTRACTORS", "Extraction", "Item", "KINDS", "Media", "Task", "Unit", "choice", "first_char",
           "load_manifest", "read_rows", "read_task", "resolve", "rotate", "run_suite", "run_task", "scorer_for",
           "units", "write_rows", "yes_no"]
