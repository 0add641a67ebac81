"""Packaging and public API: names, lazy imports, namespace layout of the built wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import csr_adapter

REPO = Path(__file__).resolve().parent.parent


def test_public_names() -> None:
    assert sorted(csr_adapter.__all__) == ["CSRConfig", "CSREncoder", "Collection", "SparseEmbedding",
                                           "SparseEmbeddings", "__version__", "open_collection"]
    for name in csr_adapter.__all__:
        assert getattr(csr_adapter, name) is not None


def test_core_imports_without_extras_and_lazily() -> None:
    code = (
        "import sys, csr_adapter; assert 'torch' not in sys.modules, 'import csr_adapter pulled torch';"
        "from csr_adapter import CSREncoder; import csr_adapter.cli.core;"
        "bad = [m for m in ('qdrant_edge', 'qdrant_client', 'faiss', 'langchain_core', 'llama_index', 'haystack')"
        " if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_framework_integrations_without_their_extra_name_it() -> None:
    for module, blocked, extra in (("llamaindex", "llama_index.core", "llamaindex"),
                                   ("haystack", "haystack", "haystack"),
                                   ("langchain", "langchain_core", "langchain")):
        code = (f"import sys; sys.modules[{blocked!r}] = None\n"  # as if the extra were not installed
                f"try:\n    import csr_adapter.integrations.{module}\nexcept ImportError as e:\n    print(e)")
        out = subprocess.run([sys.executable, "-c", code], check=True, cwd="/", capture_output=True, text=True)
        assert out.stdout.strip() == f"{blocked} is not installed: pip install 'csr-adapter[{extra}]'"


def test_wheel_installs_subpackages_inside_namespace(tmp_path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("csr_adapter-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"csr_adapter"}, tops
    assert "csr_adapter/integrations/base.py" in names
    assert "csr_adapter/training/beir.py" in names
    assert "csr_adapter/default_model/head.safetensors" in names
    assert "csr_adapter/default_model/config.json" in names


def test_readme_lists_every_environment_variable_the_code_reads():
    import re

    root = REPO
    pattern = re.compile(r'(?:environ(?:\.get)?\(|environ\[|getenv\(|envvar=|setdefault\(|_ENV = )"([A-Z][A-Z0-9_]+)"')
    found = {m for d in ("csr_adapter", "integrations", "training") for f in (root / d).rglob("*.py")
             for m in pattern.findall(f.read_text(encoding="utf-8"))}
    assert {"QDRANT_URL", "QDRANT_API_KEY", "CSR_ADAPTER_API_KEY"} <= found
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Environment variables"):]
    section = section[:section.index("\n## ", 1)]
    assert not {v for v in found if f"`{v}`" not in section}
