#!/usr/bin/env bash
# Optional set-up of the browser test (tests/test_browser.py): Debian's headless-capable Chromium and Playwright's
# Python driver (no browser download: the test uses /usr/bin/chromium). Run after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q chromium; else sudo apt-get install -y -q chromium; fi
fi
.venv/bin/python -m pip install --quiet -c constraints.txt playwright
echo "browser test set-up OK: $(chromium --version 2>/dev/null | tail -1)"
