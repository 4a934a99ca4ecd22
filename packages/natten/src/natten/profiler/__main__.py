import sys

from natten.profiler.cli import main

sys.exit(main())
