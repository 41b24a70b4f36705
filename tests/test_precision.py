import pytest
import torch

from gemma4_saelens_ext.models.precision import PRECISIONS, from_pretrained_kwargs, get_precision


def test_nf4_is_the_seed_setting():
    q = from_pretrained_kwargs("nf4")["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float16


#: what each preset must give, written out independently of the preset table:
#: (dtype kwarg, 4-bit?, 8-bit?, 4-bit compute dtype)
EXPECTED = {
    "nf4": ("auto", True, False, torch.float16),
    "nf4-bf16": (torch.bfloat16, True, False, torch.bfloat16),
    "int8": ("auto", False, True, None),
    "fp16": (torch.float16, False, False, None),
    "bf16": (torch.bfloat16, False, False, None),
    "fp32": (torch.float32, False, False, None),
    "nf4-fp32compute": ("auto", True, False, torch.float32),
}


def test_preset_names_are_the_documented_ones():
    assert tuple(EXPECTED) == PRECISIONS


@pytest.mark.parametrize("name", PRECISIONS)
def test_every_preset_builds_the_expected_kwargs(name):
    dtype, four, eight, compute = EXPECTED[name]
    kw = from_pretrained_kwargs(name)
    assert kw["dtype"] == dtype
    q = kw.get("quantization_config")
    if not (four or eight):
        assert q is None and set(kw) == {"dtype"}
        return
    assert q.load_in_4bit == four and q.load_in_8bit == eight
    if four:
        assert q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == compute
    assert from_pretrained_kwargs(name.upper()) == kw  # names are case-insensitive


def test_fp32compute_is_nf4_but_for_the_compute_dtype():
    """The fast CPU preset keeps the seed's quantization (nf4, double quant, checkpoint dtype elsewhere); only the
    4-bit compute dtype differs, and its name says so."""
    seed, fast = from_pretrained_kwargs("nf4"), from_pretrained_kwargs("nf4-fp32compute")
    assert fast["dtype"] == seed["dtype"]
    a, b = seed["quantization_config"].to_dict(), fast["quantization_config"].to_dict()
    assert {k for k in a if a[k] != b[k]} == {"bnb_4bit_compute_dtype"}
    assert "fp32" in get_precision("nf4-fp32compute").name and "not the seed" in get_precision("nf4-fp32compute").description


def test_int8_and_bf16_compute():
    assert from_pretrained_kwargs("int8")["quantization_config"].load_in_8bit
    assert from_pretrained_kwargs("nf4-bf16")["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    assert from_pretrained_kwargs("bf16") == {"dtype": torch.bfloat16}


def test_unknown_precision_lists_valid_ones():
    with pytest.raises(ValueError, match="Valid precisions: nf4, nf4-bf16, int8, fp16, bf16, fp32, nf4-fp32compute"):
        get_precision("fp8")


def test_missing_bitsandbytes_names_the_fix():
    """A real interpreter where bitsandbytes cannot be imported (blocked in sys.modules, as if not installed)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['bitsandbytes'] = None\n"
        "from gemma4_saelens_ext.models.precision import from_pretrained_kwargs\n"
        "assert from_pretrained_kwargs('bf16')\n"
        "try:\n"
        "    from_pretrained_kwargs('nf4')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install -U bitsandbytes" in out and "fp16, bf16, fp32" in out
