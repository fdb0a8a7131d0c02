"""The AVX2-only emulation (`LP_LIVE_CPU_ISA` with torch's own caps) takes effect everywhere, and an
explicit bf16/fp16 on a CPU that only emulates it is refused before models load."""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lp_live.core import cpuisa, cputune

REPO = Path(__file__).resolve().parents[1]
# inductor's cache for the emulated runs only (every kernel in it was built under the caps); kept
# between runs, beside inductor's own default one, as a cold cache costs about a minute
AVX2_INDUCTOR_CACHE = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}" / "lp-live-avx2"
AVX512_FLAGS = {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "avx_vnni"}

# run with the AVX2 emulation's variables: what torch, oneDNN, inductor and lp-live then use
PROBE = r"""
import glob, json, os, subprocess, torch
from torch._inductor import cpp_builder, cpu_vec_isa
from lp_live.core import cputune
from lp_live.engine.precision import cpu_supports_bf16, resolve_precisions

isa = cpu_vec_isa.pick_vec_isa()
w = torch.randn(8, 8, 3, 3)
torch.mkldnn_convolution(torch.randn(1, 8, 16, 16), w, None, [1, 1], [1, 1], [1, 1], 1)  # oneDNN, verbose
compiled = torch.compile(lambda a: torch.sigmoid(a) * a + a.exp())
compiled(torch.randn(4096, 257))
zmm = {}
for so in glob.glob(os.environ["TORCHINDUCTOR_CACHE_DIR"] + "/**/*.so", recursive=True):
    dis = subprocess.run(["objdump", "-d", so], capture_output=True, text=True).stdout
    if "_chk_kernel" not in dis:  # inductor's ISA probes are built for every ISA; only kernels count
        zmm[os.path.basename(so)] = dis.count("%zmm")
dtypes, source = resolve_precisions("auto", torch.device("cpu"))
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "inductor_isa": str(isa),
                  "inductor_bits": isa.bit_width(), "march": cpp_builder._get_cpu_arch_cflags("g++"),
                  "mkldnn_bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported(), "zmm": zmm,
                  "features": cputune.cpu_features(), "bf16": cpu_supports_bf16(),
                  "auto": [str(d) for d in dtypes.values()], "source": source}))
"""


def test_override_hides_the_flags_above_its_level(monkeypatch):
    monkeypatch.setattr(cpuisa, "_cpuinfo_flags", lambda: set(AVX512_FLAGS))
    monkeypatch.delenv(cpuisa.ISA_VAR, raising=False)
    assert cpuisa.cpu_flags() == AVX512_FLAGS and "avx512_bf16" in cputune.cpu_features()
    key = cputune.machine_key()
    monkeypatch.setenv(cpuisa.ISA_VAR, "avx2")
    assert cpuisa.cpu_flags() == {"avx2"} and cputune.cpu_features() == ["avx2"]
    assert cputune.machine_key() == key + " | isa avx2"  # its own threading and precision caches
    monkeypatch.setenv(cpuisa.ISA_VAR, "avx512")
    assert cpuisa.cpu_flags() == {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni"}
    monkeypatch.setenv(cpuisa.ISA_VAR, "AVX3")
    with pytest.raises(ValueError, match="LP_LIVE_CPU_ISA='avx3' is not an instruction-set level"):
        cpuisa.override()


def test_the_makefile_sets_the_emulation_variables():
    """`make test-avx2` sets exactly `EMULATION_ENV["avx2"]` (declared once, in cpuisa)."""
    line = next(ln for ln in (REPO / "Makefile").read_text().splitlines() if ln.startswith("AVX2_ENV"))
    assert dict(re.findall(r"(\w+)=(\S+)", line.partition(":=")[2])) == cpuisa.EMULATION_ENV["avx2"]


@pytest.mark.skipif("avx2" not in cpuisa._cpuinfo_flags(), reason="this CPU has no AVX2 to emulate an AVX2 CPU with")
def test_avx2_emulation_is_effective(tmp_path):
    """Under the variables, torch's kernels, oneDNN and inductor's generated C++ stay within AVX2 (no
    512-bit register in the compiled kernels), and lp-live sees no AVX-512 and no native bf16."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATEN_", "ONEDNN_", "TORCHINDUCTOR_", "MKL_"))}
    env.update(cpuisa.EMULATION_ENV["avx2"], PYTHONPATH=str(REPO), ONEDNN_VERBOSE="1",
               TORCHINDUCTOR_CACHE_DIR=str(AVX2_INDUCTOR_CACHE), XDG_CACHE_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "onednn_verbose,v1,info,cpu,isa:Intel AVX2\n" in out.stdout, out.stdout[:2000]
    assert re.search(r"convolution,jit:avx2,", out.stdout)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["capability"] == "AVX2" and got["inductor_isa"] == "avx2" and got["inductor_bits"] <= 256
    assert got["march"] == ["march=x86-64-v3"] and not got["mkldnn_bf16"]
    if subprocess.run(["which", "objdump"], capture_output=True).returncode == 0:
        assert got["zmm"] and not any(got["zmm"].values()), got["zmm"]
    assert not any(f.startswith(("avx512", "amx")) for f in got["features"]) and not got["bf16"]
    assert got["auto"] == ["torch.float32"] * 2 and got["source"] == "no native bf16"


def test_explicit_bf16_is_refused_where_it_is_emulated(monkeypatch):
    """The CLI's check, before models load: one line with the slowdown measured here; --force-precision
    lets it through."""
    from lp_live.cli import check_precision
    from lp_live.core.config_schema import EngineConfig
    from lp_live.engine import precision

    monkeypatch.setenv(cpuisa.ISA_VAR, "avx2")
    with pytest.raises(precision.EmulatedPrecisionError) as e:
        check_precision(EngineConfig(device="cpu", precision="bf16"))
    assert re.fullmatch(r"--precision bf16: this CPU has no native bf16 \(avx512_bf16 or amx_bf16 missing; "
                        r"LP_LIVE_CPU_ISA=avx2\), so it is emulated: a 3-D convolution measured \d+x slower than "
                        r"fp32 here; use --precision auto or fp32, or add --force-precision to run bf16 anyway",
                        str(e.value))
    monkeypatch.setattr(precision, "emulation_slowdown", lambda dtype: pytest.fail("measured despite the force"))
    check_precision(EngineConfig(device="cpu", precision="bf16", force_precision=True))
    check_precision(EngineConfig(device="cpu", precision="fp32"))
    monkeypatch.setattr(precision, "cpu_supports_fp16", lambda: True)
    check_precision(EngineConfig(device="cpu", precision="fp16"))  # native: nothing measured


def test_the_cli_refuses_emulated_bf16_before_models_load(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path), OMP_NUM_THREADS="1",
               OMP_WAIT_POLICY="PASSIVE", **cpuisa.EMULATION_ENV["avx2"])
    out = subprocess.run([sys.executable, "-m", "lp_live.cli", "--precision", "bf16", "--device", "cpu",
                          "--weights", "synthetic", "--sink", "null"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("lp-live: error: --precision bf16: this CPU has no native bf16")
    assert "x slower than fp32 here" in out.stderr and "--force-precision" in out.stderr
