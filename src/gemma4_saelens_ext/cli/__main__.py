"""``python -m gemma4_saelens_ext.cli ...`` == ``gemma4-sae ...`` (also ``torchrun -m gemma4_saelens_ext.cli extract``)."""

import sys

from gemma4_saelens_ext.cli import main

sys.exit(main())
