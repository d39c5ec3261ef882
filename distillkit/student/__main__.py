"""``python -m distillkit.student``: the same as ``distillkit serve-student``."""

import sys

from distillkit.cli import main

sys.exit(main(["serve-student", *sys.argv[1:]]))
