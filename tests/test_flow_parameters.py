"""How bulkflow's flows store their parameters (`tasks/prefect_defaults.py`): as Prefect's own
encoder would, without loading FastAPI to do it. Pure: nothing started."""

from __future__ import annotations

import subprocess
import sys

from schemas.parameters import ImportOptions

PARAMETERS = {
    "resource": "users",
    "source": "/data/partner 42.csv",
    "format": None,
    "options": ImportOptions(chunk_size=5, source_name="Partner 42 (May).csv", map={"E-Mail": "email"}),
}


def test_parameters_are_stored_as_prefects_encoder_stores_them() -> None:
    from fastapi.encoders import jsonable_encoder

    from flows.import_flow import import_flow

    assert import_flow.serialize_parameters(dict(PARAMETERS)) == {
        name: jsonable_encoder(value) for name, value in PARAMETERS.items()
    }


def test_storing_them_loads_no_fastapi() -> None:
    script = (
        "import sys; from flows.import_flow import import_flow; from schemas.parameters import ImportOptions; "
        "import_flow.serialize_parameters({'source': 'x.csv', 'options': ImportOptions(chunk_size=5)}); "
        "print('fastapi' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"


def test_what_cannot_be_stored_is_stored_by_its_type_name() -> None:
    from flows.import_flow import import_flow

    class Opaque:
        pass

    assert import_flow.serialize_parameters({"source": Opaque()}) == {"source": "<Opaque>"}
