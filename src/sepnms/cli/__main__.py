"""``python -m sepnms.cli ...`` (what torchrun runs): the ``sepnms`` command."""
import sys

from sepnms.cli import main

sys.exit(main())
