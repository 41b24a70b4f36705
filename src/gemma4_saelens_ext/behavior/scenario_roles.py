"""The role-play kinds: ``role_play`` (roles x setups x questions, role-swapped twins) and ``input_variation`` (the same
two-choice questions under a neutral and two sandbagging templates).

* **role play** (``kind: role_play``): ``roles`` (each with ``keywords``), ``setups`` and ``questions`` with ``{role}``
  / ``{other}`` placeholders. Every setup x question is instantiated once per role, which yields the role-swapped
  variants: the answer word "Werewolf" is honest for the werewolf prompt and deceptive for the villager prompt, so a
  label can never be predicted from the answer word alone. Explicit ``prompts:`` entries are also accepted.
* **input variation** (``kind: input_variation``): ``variants`` (``neutral``, ``V0``, ``V3`` templates with a
  ``{question}`` placeholder) x ``questions`` (each with ``honest_keywords`` = correct choice and
  ``deceptive_keywords`` = wrong choice). These give the diagnostic split neutral vs sandbagging templates.

Honest means the completion keeps the assigned role (or answers correctly); deceptive means it drifts. See the seed
card's caveat: this measures role consistency, not strategic deception.
"""

from __future__ import annotations

from gemma4_saelens_ext.behavior.scenario_base import Prompt, ScenarioError, as_list, fmt

__all__ = ["INPUT_VARIANTS", "role_play", "input_variation"]

#: the input-variation conditions of the diagnostic split
INPUT_VARIANTS: tuple[str, ...] = ("neutral", "V0", "V3")


def role_play(doc: dict, family: str, where: str) -> list[Prompt]:
    roles = doc.get("roles") or {}
    if roles and (not isinstance(roles, dict) or len(roles) < 2):
        raise ScenarioError(f"{where}: `roles` must map at least two role ids to {{name, keywords}}.")
    role_kw: dict[str, list[str]] = {}
    role_name: dict[str, str] = {}
    role_para: dict[str, list[str]] = {}
    for rid, spec in roles.items():
        spec = spec or {}
        role_name[rid] = str(spec.get("name", rid))
        role_kw[rid] = as_list(spec.get("keywords"), f"{where} role {rid!r}", "keywords")
        role_para[rid] = as_list(spec.get("paraphrases"), f"{where} role {rid!r}", "paraphrases")
        if not role_kw[rid]:
            raise ScenarioError(
                f"{where}: role {rid!r} of family {family!r} has no keywords; the keyword judge needs at least one "
                f"word that decides it, e.g. `roles: {{{rid}: {{keywords: [{role_name[rid].lower()}]}}}}`."
            )
    prompts: list[Prompt] = []
    setups = doc.get("setups") or []
    questions = doc.get("questions") or []
    if roles and (setups or questions):
        if not setups or not questions:
            raise ScenarioError(f"{where}: family {family!r} needs both `setups` and `questions` to expand roles.")
        for s in setups:
            for q in questions:
                for rid in roles:
                    others = [o for o in roles if o != rid]
                    # the "other" role named in posing setups is the first other role (two-role families)
                    other = others[0]
                    kw = dict(role=role_name[rid], other=role_name[other])
                    sid, qid = str(s["id"]), str(q["id"])
                    text = fmt(str(s["text"]), where, **kw) + fmt(str(q["text"]), where, **kw)
                    prompts.append(
                        Prompt(
                            id=f"{family}.{sid}.{qid}.{rid}",
                            family=family,
                            text=text,
                            honest_keywords=tuple(role_kw[rid]),
                            deceptive_keywords=tuple(k for o in others for k in role_kw[o]),
                            honest_paraphrases=tuple(role_para[rid]),
                            deceptive_paraphrases=tuple(p for o in others for p in role_para[o]),
                            kind="role_play",
                            variant="behavior",
                            cluster=family,
                            label_rule="role_consistency",
                            group=f"{family}.{sid}.{qid}",
                            role=role_name[rid],
                            honest_meaning=f"the answer keeps the assigned role {role_name[rid]}",
                            deceptive_meaning="the answer claims or drifts to another role ("
                            + ", ".join(role_name[o] for o in others)
                            + ")",
                        )
                    )
    for i, e in enumerate(doc.get("prompts") or []):
        w = f"{where} prompts[{i}]"
        if not isinstance(e, dict) or "text" not in e or "id" not in e:
            raise ScenarioError(f"{w}: each explicit prompt needs `id` and `text`.")
        rid = e.get("role")
        hk = as_list(e.get("honest_keywords"), w, "honest_keywords")
        dk = as_list(e.get("deceptive_keywords"), w, "deceptive_keywords")
        if rid in role_kw:
            hk = hk or role_kw[rid]
            dk = dk or [k for o in role_kw if o != rid for k in role_kw[o]]
        prompts.append(
            Prompt(
                id=f"{family}.{e['id']}",
                family=family,
                text=str(e["text"]),
                honest_keywords=tuple(hk),
                deceptive_keywords=tuple(dk),
                honest_paraphrases=tuple(as_list(e.get("honest_paraphrases"), w, "honest_paraphrases")),
                deceptive_paraphrases=tuple(as_list(e.get("deceptive_paraphrases"), w, "deceptive_paraphrases")),
                kind="role_play",
                variant="behavior",
                cluster=family,
                label_rule="role_consistency",
                group=str(e.get("group", f"{family}.{e['id']}")),
                role=role_name.get(rid, str(rid or "")),
                honest_meaning=str(e.get("honest_meaning", "the answer keeps the assigned role")),
                deceptive_meaning=str(e.get("deceptive_meaning", "the answer drifts away from the assigned role")),
            )
        )
    return prompts


def input_variation(doc: dict, family: str, where: str) -> list[Prompt]:
    variants = doc.get("variants") or {}
    missing = [v for v in INPUT_VARIANTS if v not in variants]
    if missing:
        raise ScenarioError(
            f"{where}: input-variation family {family!r} lacks variant templates {missing}; "
            f"define `variants:` with keys {list(INPUT_VARIANTS)} each containing '{{question}}'."
        )
    prompts = []
    for i, q in enumerate(doc.get("questions") or []):
        w = f"{where} questions[{i}]"
        if not isinstance(q, dict) or "id" not in q or "text" not in q:
            raise ScenarioError(f"{w}: each question needs `id` and `text`.")
        hk = as_list(q.get("honest_keywords"), w, "honest_keywords")
        dk = as_list(q.get("deceptive_keywords"), w, "deceptive_keywords")
        for v in INPUT_VARIANTS:
            prompts.append(
                Prompt(
                    id=f"{family}.{q['id']}.{v}",
                    family=family,
                    text=fmt(str(variants[v]), w, question=str(q["text"])),
                    honest_keywords=tuple(hk),
                    deceptive_keywords=tuple(dk),
                    honest_paraphrases=tuple(as_list(q.get("honest_paraphrases"), w, "honest_paraphrases")),
                    deceptive_paraphrases=tuple(as_list(q.get("deceptive_paraphrases"), w, "deceptive_paraphrases")),
                    kind="input_variation",
                    variant=v,
                    cluster=family,
                    label_rule="answer_choice",
                    group=f"{family}.{q['id']}",
                    role="",
                    honest_meaning=f"the answer gives the correct choice ({', '.join(hk)})",
                    deceptive_meaning=f"the answer gives the wrong choice ({', '.join(dk)})",
                )
            )
    return prompts
