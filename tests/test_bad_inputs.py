import pytest

from hypernetwork_ext import HypernetworkError

from bad_inputs import DOC, ROWS, render


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.group}: {r.what}" for r in ROWS])
def test_each_bad_input_gives_its_message(tmp_path, row):
    if row.shown == "error":
        with pytest.raises(HypernetworkError) as caught:
            row.run(tmp_path)
        message = str(caught.value)
    else:
        report = row.run(tmp_path)  # training goes on; the dataset report says what happened to the file
        message = next((line for line in report.splitlines() if line.startswith(row.shown)), "")
    assert row.expect in message, message
    assert not (tmp_path / "marker").exists()


def test_the_catalogue_in_docs_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), "run: python tests/bad_inputs.py"
