import sys

from bench.zk_compare import main

sys.exit(main())
