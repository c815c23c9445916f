"""The demo's answer is the full search's: the halving demo as shipped (studies/demo.yaml) names the stage that
training every stage and control of the demo to the full budget names, on the demo's recorded data."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks._replay import Recording, full_chain, replay_search
from scalekit.results.fidelity import Contender, beats
from scalekit.study.engine.schedule import Schedule, synchronous_for
from scalekit.studyfile import load_study_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "studies" / "demo.yaml"
CURVES = ROOT / "benchmarks" / "data" / "search_curves_demo.json"
FULL_RUN = ROOT / "benchmarks" / "data" / "demo_full_chain.json"  # search_efficiency.py full --space demo


def recorded(rec: Recording, key: str) -> Contender:
    family, kernel, variant = key.split("-")
    k = int(kernel.removeprefix("k"))
    return Contender(key, rec.dice(family, k, variant, rec.epochs), tuple(rec.cases(family, k, variant, rec.epochs)))


def test_the_recording_and_the_full_run_name_the_same_answer() -> None:
    """The recorded curves are the demo's full chain: the real ``scheduler: full`` run of the demo names the
    family and kernel the recording's best stage has (or one within noise of it)."""
    config = load_study_config(DEMO)
    rec = Recording(json.loads(CURVES.read_text()))
    run = json.loads(FULL_RUN.read_text())
    chain = full_chain(rec, config.constraints.max_memory_gb)
    assert run["answer"] == chain.answer or not beats(recorded(rec, chain.answer), recorded(rec, run["answer"]))


def test_the_shipped_halving_demo_names_the_full_chain_answer() -> None:
    """The demo's own schedule (synchronous halving over rungs 1-2-4, controls on) decided on the recorded
    measurements, in the order a single worker trains them, names the full chain's stage (or one within the
    noise of it on the same validation cases)."""
    config = load_study_config(DEMO)
    s = config.search
    schedule = Schedule(s.scheduler, config.training.epochs, s.eta, s.min_epochs,
                        synchronous_for(s.families, s.eta, config.resources.max_concurrent))
    rec = Recording(json.loads(CURVES.read_text()))
    budget = config.constraints.max_memory_gb
    chain = full_chain(rec, budget)
    outcome = replay_search(rec, schedule, seed=0, workers=config.resources.max_concurrent,
                            min_improvement=config.chain.min_improvement, controls=bool(config.chain.controls),
                            jitter=0.0, noise=0.0, max_memory_gb=budget)
    assert outcome.answer_family == chain.answer_family
    assert outcome.answer == chain.answer or not beats(recorded(rec, chain.answer), recorded(rec, outcome.answer))
    assert outcome.tflops < chain.tflops, "the search spent less than the full chain"
