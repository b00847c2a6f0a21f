"""Run the group service: `python -m group_svc`."""

from group_svc.bootstrap import SPEC
from group_svc.config import load_config
from mppo.platform.runtime import run_service

if __name__ == "__main__":
    run_service(SPEC, load_config)
