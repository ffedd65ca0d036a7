"""Write the shipped HAProxy configurations again after the template changed.

``deploy/haproxy/haproxy.cfg`` and the ``haproxy.cfg`` inside the ConfigMap of
``deploy/k8s/haproxy.yaml`` are outputs of ``splatcast deploy haproxy``; each
names the command that wrote it in its header. This runs those commands again
and puts the results in place (tests/test_deploy.py fails until it is run).

    python scripts/render_deploy.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realtime.cli.deploy import rerender  # noqa: E402

CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
K8S = ROOT / "deploy" / "k8s" / "haproxy.yaml"
BLOCK = "  haproxy.cfg: |\n"  # the ConfigMap key; its value is indented by 4 spaces up to the next document
INDENT = "    "


def configmap_block(yaml_text: str) -> tuple[int, int]:
    """Character span of the ConfigMap's haproxy.cfg value in ``yaml_text``."""
    start = yaml_text.index(BLOCK) + len(BLOCK)
    end = yaml_text.index("\n---\n", start) + 1
    return start, end


def main() -> int:
    CFG.write_text(rerender(CFG.read_text()))
    text = K8S.read_text()
    start, end = configmap_block(text)
    old = "".join(line.removeprefix(INDENT) for line in text[start:end].splitlines(keepends=True))
    new = "".join(
        (INDENT + line) if line.strip() else line for line in rerender(old).splitlines(keepends=True)
    )
    K8S.write_text(text[:start] + new + text[end:])
    print(f"wrote {CFG.relative_to(ROOT)} and the ConfigMap in {K8S.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
