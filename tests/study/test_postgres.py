"""A study on a PostgreSQL server: killed and resumed while another study shares the database.

The server is the one ``SCALEKIT_TEST_POSTGRES`` names (a SQLAlchemy URL; `.ci/run` starts one with
`scripts/test_postgres.sh`), else a throwaway one this module starts with that script on 127.0.0.1 and stops
at the end. Without the script's PostgreSQL binaries or the psycopg2 driver the tests are skipped, with the
reason. The URL's user must be allowed to create databases (the script's is the server's superuser).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from scalekit.space import Family, SearchSpace
from scalekit.study import read_results
from scalekit.records import StudyDir
from scalekit.study.engine.search import SearchSettings, open_optuna_study

from tests.helpers.faultkit import ENV, check_consistent, command, kill_at, run, snapshot, study_file
from tests.helpers.cli import refused

pytestmark = pytest.mark.slow

URL_ENV = "SCALEKIT_TEST_POSTGRES"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test_postgres.sh"
CHAIN = [3, 5]
OTHER_FAMILY = {"label": "b", "n_channels": 8, "block_counts": 1, "exp_r": 2}


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The server's URL: ``SCALEKIT_TEST_POSTGRES`` if set (a broken one fails the tests), else a server started
    here for this module."""
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    try:
        import psycopg2  # noqa: F401  (the driver the URLs name)
    except ImportError as err:
        pytest.skip(f"PostgreSQL not available: {err}; pip install -e '.[postgres]'")
    folder = tempfile.mkdtemp(prefix="scalekit-pg-")  # in /tmp: the server's own user must enter it
    try:
        started = subprocess.run(["bash", str(SCRIPT), "start", folder], capture_output=True, text=True, timeout=120)
        if started.returncode:
            reason = (started.stderr.strip().splitlines() or [f"exit {started.returncode}"])[-1]
            pytest.skip(f"PostgreSQL not available: {reason}; or set {URL_ENV} to a server's URL")
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], capture_output=True, timeout=120)


def test_killed_study_resumes_beside_another_on_one_database(tmp_path: Path, postgres_url: str,
                                                             nnunet_dirs: dict[str, str]) -> None:
    """Study A (k3 -> k5) is killed with SIGKILL once k5 started, while study B (another family, started when
    A's data was ready) runs on the same database; A's rerun finishes with every stage once, B finishes, and
    each Optuna study holds its own family's trial only."""
    tag = uuid.uuid4().hex[:8]  # a server kept between runs (SCALEKIT_TEST_POSTGRES) holds earlier studies
    names = {"a": f"pg-a-{tag}", "b": f"pg-b-{tag}"}
    quick = {"storage": postgres_url, "finish": {"report": False, "export": None}}
    a = study_file(tmp_path / "a", nnunet_dirs, CHAIN, epochs=1, name=names["a"], **quick)
    b = study_file(tmp_path / "b", nnunet_dirs, [3], epochs=1, name=names["b"],
                   space={"families": [OTHER_FAMILY], "kernels": [3]}, **quick)
    beside = None

    def start_b_when_a_prepared() -> None:  # both reuse one preparation of the dataset: none runs twice
        nonlocal beside
        if beside is None and StudyDir(tmp_path / "a" / "study").prepared.exists():
            beside = subprocess.Popen(command(b), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
                                      text=True, start_new_session=True)

    try:
        kill_at(a, "stage-request:-k5", tmp_path / "a" / "study", while_waiting=start_b_when_a_prepared)
        assert beside is not None
        assert len(snapshot(tmp_path / "a" / "study")) == 1  # k3 completed, k5 killed
        (killed,) = optuna.load_study(study_name=names["a"], storage=postgres_url).trials
        assert killed.state == optuna.trial.TrialState.RUNNING
        run(a)
        _, err = beside.communicate(timeout=600)
        assert beside.returncode == 0, err[-3000:]
    finally:
        if beside is not None and beside.poll() is None:
            os.killpg(beside.pid, signal.SIGKILL)
            beside.wait(timeout=60)
    check_consistent(tmp_path / "a" / "study", CHAIN, postgres_url, names["a"])
    check_consistent(tmp_path / "b" / "study", [3], postgres_url, names["b"])
    assert set(names.values()) <= set(optuna.get_all_study_names(storage=postgres_url))
    families = {key: {r.family_id for r in read_results(tmp_path / key / "study")} for key in names}
    assert families["a"].isdisjoint(families["b"])
    for key, name in names.items():
        trials = optuna.load_study(study_name=name, storage=postgres_url).trials
        assert {t.user_attrs["family_id"] for t in trials} == families[key]
        stages = {attr for t in trials for attr in t.user_attrs if attr.startswith("stage.")}
        assert len(stages) == len(read_results(tmp_path / key / "study"))
    password = make_url(postgres_url).password
    assert password and password not in (tmp_path / "a" / "study" / "study.log").read_text()


def test_wrong_password_is_one_line_naming_the_url(monkeypatch, capsys, tmp_path: Path, postgres_url: str,
                                                   nnunet_dirs: dict[str, str]) -> None:
    """The server answers but refuses the password: one preflight line, the URL's password masked."""
    url = make_url(postgres_url).set(password="not-the-password")
    path = study_file(tmp_path, nnunet_dirs, [3], epochs=1, storage=url.render_as_string(hide_password=False))
    problems = refused(monkeypatch, capsys, path)
    assert len(problems) == 1
    assert problems[0].startswith(f"storage: cannot connect to {url.render_as_string(hide_password=True)}: ")
    assert "password authentication failed" in problems[0] and "not-the-password" not in problems[0]
    assert problems[0].endswith("; start the database or correct the URL")


def test_drivers_creating_the_tables_of_a_fresh_database_at_once(postgres_url: str) -> None:
    """Four drivers open their studies on an empty database at the same moment (Optuna creates its tables on
    first use, which collides without scalekit's retry): each opens its own study, with its queued family."""
    database = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(make_url(postgres_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    fresh = make_url(postgres_url).set(database=database).render_as_string(hide_password=False)
    space = SearchSpace((Family(4, 1, 2),), kernels=(3,), seeds=(Family(4, 1, 2).family_id,))
    start, errors = threading.Barrier(4), []

    def open_study(index: int) -> None:
        settings = SearchSettings(sampler="grid", families=1, seed=0, metrics=("mean_dice",),
                                  directions=("maximize",), storage=fresh, study_name=f"driver-{index}")
        start.wait()
        try:
            open_optuna_study(settings, space)
        except Exception as err:  # noqa: BLE001  (reported below, the thread would swallow it)
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=open_study, args=(index,)) for index in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert sorted(optuna.get_all_study_names(storage=fresh)) == [f"driver-{i}" for i in range(4)]
        for index in range(4):
            (trial,) = optuna.load_study(study_name=f"driver-{index}", storage=fresh).trials
            assert trial.state == optuna.trial.TrialState.WAITING
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE {database} WITH (FORCE)"))
        admin.dispose()
