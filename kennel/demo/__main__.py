import sys

from kennel.demo.generator import main

sys.exit(main())
