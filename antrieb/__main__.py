"""``python -m antrieb ...``: the same command as ``antrieb ...``."""

from antrieb.cli import main

main()
