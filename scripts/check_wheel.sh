#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv OUTSIDE the checkout, and resolve every shipped training config and
# eval suite by name there (a dry run: no model loads). The fresh venv borrows the dependencies already installed in
# .venv (a plain path in a .pth file: .venv's own editable-install hook is not run), so nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" . >/dev/null
python3 -m venv "$work/venv"
site_new="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
site_old="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$site_old" > "$site_new/_borrowed_deps.pth"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$work"/dist/*.whl
cd "$work"
HF_HUB_OFFLINE=1 "$work/venv/bin/python" - <<'PY'
import gemma4_saelens_ext, pathlib
from gemma4_saelens_ext.paths import shipped_configs
from gemma4_saelens_ext.training.runner import load_training_config
from gemma4_saelens_ext.evals import load_suite
where = pathlib.Path(gemma4_saelens_ext.__file__)
assert "site-packages" in str(where), f"imported from {where}, not from the installed wheel"
names = {"training_configs": sorted(shipped_configs("training_configs")), "evals": sorted(shipped_configs("evals"))}
assert len(names["training_configs"]) >= 2 and len(names["evals"]) >= 2, names
for n in names["training_configs"]:
    load_training_config(n)
for n in names["evals"]:
    load_suite(n)
print(f"wheel OK outside the checkout ({where.parent}): {names}")
PY
"$work/venv/bin/gemma4-sae" evals validate demo gemma4_e2b_gf1_behavior_L25_nf4
# every command's --help shows its config's field docstrings from the installed wheel (the help reads the sources)
top_help="$("$work/venv/bin/gemma4-sae" --help)"
demo_help="$("$work/venv/bin/gemma4-sae" demo --help)"
grep -q "build-dataset" <<<"$top_help"
grep -q "completions per prompt" <<<"$demo_help"
echo "gemma4-sae --help and demo --help OK from the wheel"
