"""Model folders for tests of the checks that run before a model loads."""

from __future__ import annotations


def config_only(tmp_path, kind: str = "gemma4-multimodal", n_layers: int = 4, hidden: int = 64) -> str:
    """A model folder with only a config.json (as ``save_pretrained`` writes it) and no weights or tokenizer."""
    from transformers import Gemma3Config, Gemma3TextConfig, Gemma4Config, Gemma4TextConfig

    folder = tmp_path / f"{kind}-config-only"
    if kind.startswith("gemma4"):
        text = Gemma4TextConfig(hidden_size=hidden, intermediate_size=128, num_hidden_layers=n_layers,
                                num_attention_heads=2, num_key_value_heads=1, head_dim=32, global_head_dim=32,
                                layer_types=["sliding_attention", "full_attention"] * (n_layers // 2))
        if kind == "gemma4-multimodal":
            cfg = Gemma4Config(text_config=text.to_dict(), vision_config=None, audio_config=None,
                               architectures=["Gemma4ForConditionalGeneration"])
        else:
            cfg, cfg.architectures = text, ["Gemma4ForCausalLM"]
    else:
        text = Gemma3TextConfig(hidden_size=hidden, intermediate_size=128, num_hidden_layers=n_layers,
                                num_attention_heads=2, num_key_value_heads=1, head_dim=32)
        if kind == "gemma3-multimodal":
            cfg = Gemma3Config(text_config=text.to_dict(), architectures=["Gemma3ForConditionalGeneration"])
        else:
            cfg, cfg.architectures = text, ["Gemma3ForCausalLM"]
    cfg.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    return str(folder)
