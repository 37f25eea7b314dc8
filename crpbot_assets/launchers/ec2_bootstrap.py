"""What a launched instance runs: the project bundle (a wheel) and the user data that boots the job.

The user data (deploy/ec2-user-data.sh.tmpl) sets the watchdog, checks the GPU, prepares the Python environment
and runs `crpbot_assets.launchers.ec2_job` until the job's deadline; its CRPBOT_JOB section is self-contained, so
tests run exactly that part on this machine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from crpbot_assets.common.settings import REPO_ROOT

USER_DATA_TEMPLATE = REPO_ROOT / "deploy" / "ec2-user-data.sh.tmpl"
MAX_USER_DATA_BYTES = 16 * 1024  # EC2's limit on raw user data
WATCHDOG_AFTER_DEADLINE_S = 600  # the instance's own shutdown, for when the Dagster host is gone
# What the job imports beyond the image's torch, numpy and boto3, pinned to this host's versions: installed on
# the instance only when the image lacks them (no dependencies of their own are needed).
REMOTE_PACKAGES = ("polars", "pyarrow", "dagster-pipes")
_JOB_SCRIPT = re.compile(r"<<'CRPBOT_JOB'\n(.*?\n)CRPBOT_JOB\n", re.S)


def default_requirements() -> list[str]:
    """The remote job's packages beyond the image's, pinned to this host's versions."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in REMOTE_PACKAGES]


def render_user_data(template: str, values: dict[str, str]) -> str:
    """Fill `{{name}}` placeholders; a missing or unused value is an error, and so is oversized user data."""
    names = set(re.findall(r"\{\{(\w+)\}\}", template))
    if missing := names - values.keys():
        raise KeyError(f"user data template needs values for {sorted(missing)}")
    if unused := values.keys() - names:
        raise KeyError(f"user data template has no placeholders for {sorted(unused)}")
    rendered = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)
    if len(rendered.encode()) > MAX_USER_DATA_BYTES:
        raise ValueError(
            f"rendered user data is {len(rendered.encode())} bytes; EC2 allows {MAX_USER_DATA_BYTES}"
        )
    return rendered


def extract_job_script(user_data: str) -> str:
    """The self-contained job part of rendered user data (what runs after the instance's installs)."""
    match = _JOB_SCRIPT.search(user_data)
    if not match:
        raise ValueError("user data has no CRPBOT_JOB section")
    return match.group(1)


def user_data(
    template: Path,
    *,
    launch,
    region: str,
    pipes_env: dict[str, str],
    bucket: str,
    bundle_key: str,
    run_prefix: str,
    deadline_epoch: float,
    upload_interval_s: float,
) -> str:
    """The bootstrap of one launch (`launch`: an EC2LaunchSpec) that must be done by `deadline_epoch` (unix s)."""
    requirements = launch.requirements if launch.requirements is not None else default_requirements()
    q = shlex.quote
    return render_user_data(
        template.read_text(),
        {
            "deadline_epoch": str(math.floor(deadline_epoch)),
            "watchdog_after_s": str(WATCHDOG_AFTER_DEADLINE_S),
            "require_cuda": "1" if launch.require_cuda else "0",
            "machine": q(launch.machine(region)),
            "python_bin": q(launch.python_bin),
            "requirements": " ".join(q(r) for r in requirements),
            "pip_index_args": f"--index-url {q(launch.pip_index_url)}" if launch.pip_index_url else "",
            "region": q(region),
            "pipes_context": q(pipes_env["DAGSTER_PIPES_CONTEXT"]),
            "pipes_messages": q(pipes_env["DAGSTER_PIPES_MESSAGES"]),
            "upload_interval_s": q(str(upload_interval_s)),
            "job_env": "\n".join(f"export {k}={q(v)}" for k, v in sorted(launch.job_env.items())),
            "bucket": q(bucket),
            "bundle_key": q(bundle_key),
            "bundle_name": q(bundle_key.rsplit("/", 1)[1]),
            "status_key": q(f"{run_prefix}/status.json"),
            "log_key": q(f"{run_prefix}/job.log"),
            "job_deadline_epoch": str(math.floor(deadline_epoch - launch.finish_margin_s)),
            "kill_after_s": str(launch.kill_after_s),
            "entry_module": q(launch.entry_module),
        },
    )


_BUNDLES: dict[str, Path] = {}


def build_bundle(source_root: Path = REPO_ROOT) -> Path:
    """A wheel of the package built from a clean copy of the sources (memoized per source content)."""
    files = [source_root / "pyproject.toml"] + sorted(
        p
        for p in (source_root / "crpbot_assets").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(source_root)).encode() + b"\0" + path.read_bytes())
    key = digest.hexdigest()
    if key in _BUNDLES and _BUNDLES[key].exists():
        return _BUNDLES[key]
    work = Path(tempfile.mkdtemp(prefix="crpbot-bundle-"))
    for path in files:
        target = work / "src" / path.relative_to(source_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(
        [*command, "-q", "-w", str(work / "dist"), str(work / "src")], capture_output=True, text=True
    )
    wheels = list((work / "dist").glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        raise RuntimeError(
            f"building the project wheel from {source_root} failed:\n{result.stdout}{result.stderr}"
        )
    _BUNDLES[key] = wheels[0]
    return wheels[0]
