"""The grader side of the attack corpus: a Lambda-like process that scores one batch with the code_tests handler.

Run as ``python grade.py HANDLER.py OBSERVATIONS.json`` with the batch on stdin. Logs go to stderr at DEBUG, the
handler's results to stdout (both are searched for planted secrets afterwards). What the rollouts sent back (raw
answers and failure texts, to tell whether an attack *saw* a secret), why each one ended, how many processes the
sweep had to kill, and this process's peak memory go to OBSERVATIONS.json. Standard library only, so it also runs
as an unprivileged user with the system interpreter.
"""

import importlib.util
import json
import logging
import sys

handler_path, observations_path = sys.argv[1], sys.argv[2]
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
spec = importlib.util.spec_from_file_location("code_tests", handler_path)
ct = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ct)

observed = []
execute = getattr(ct, "_execute", None)


def spy(plan, code, tests, *args, **kwargs):
    out = execute(plan, code, tests, *args, **kwargs)
    observed.append({"code": code, "answers": [v.decode("utf-8", "replace") for v in out["answers"].values()],
                     "failure": out["failure"], "why": out["why"], "left_behind": out["left_behind"],
                     "timed_out": out["timed_out"], "level": out["level"], "stderr": out["stderr"]})
    return out


run_in_sandbox = ct.run_in_sandbox


def spy_old(code, tests, *args, **kwargs):  # the pre-hardening handler: only its failure texts to observe
    out = run_in_sandbox(code, tests, *args, **kwargs)
    observed.append({"code": code, "answers": [], "failure": out.get("failure", ""), "why": "",
                     "left_behind": 0, "timed_out": out.get("timed_out"), "level": 0, "stderr": out.get("stderr", "")})
    return out


if execute is not None:
    ct._execute = spy
else:
    ct.run_in_sandbox = spy_old
batch = json.load(sys.stdin)
results = ct.lambda_handler(batch, None)
print(json.dumps(results))
with open(observations_path, "w") as fh:
    # VmHWM, the peak RSS of this address space (ru_maxrss would include the parent's RSS from before exec)
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    json.dump({"observed": observed, "isolation": ct.isolation() if hasattr(ct, "isolation") else {},
               "maxrss_mb": peak_kb / 1024}, fh)
