"""``python -m antrieb.cli ...``: the same command as ``antrieb ...``."""

from antrieb.cli import main

main()
