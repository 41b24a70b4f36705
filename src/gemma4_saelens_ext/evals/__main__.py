import sys

from gemma4_saelens_ext.evals.cli import main

sys.exit(main())
