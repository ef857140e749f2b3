import sys

from rotation.cli import main

sys.exit(main())
