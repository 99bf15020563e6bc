"""The Initializer with fault injection armed: the test build of ``initializer``.

    CONTRAST_FAULT_INJECTION=after:mkfs CONTRAST_FAULT_SIGNAL=/tmp/fault \\
        python -m tests.vm.faulty_initializer cryptsetup -d /dev/vda -m /state ...

Lives in the test tree, which no image installs; the ``initializer`` command itself never
reads these variables (see initializer/faults.py).
"""

from __future__ import annotations

import os

from initializer import faults
from initializer.cli import main

if __name__ == "__main__":
    faults.arm_from_environment(os.environ)
    main(prog_name="initializer")
