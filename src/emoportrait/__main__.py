import sys

from emoportrait.cli import main

sys.exit(main())
