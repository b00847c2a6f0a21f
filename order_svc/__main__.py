"""Run the order service: `python -m order_svc`."""

from mppo.platform.runtime import run_service
from order_svc.bootstrap import SPEC
from order_svc.config import load_config

if __name__ == "__main__":
    run_service(SPEC, load_config)
