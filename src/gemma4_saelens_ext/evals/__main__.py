import sys

from gemma4_saelens_ext.cli.evals import main

sys.exit(main())
