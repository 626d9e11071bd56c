"""The analysis of experiments/study.py into STUDY/analysis/: table, paired comparison, ε ↔ β map, figures."""

import sys

from constrained_vae.cli.study_analysis import analysis_main

if __name__ == "__main__":
    sys.exit(analysis_main())
