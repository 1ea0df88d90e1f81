"""Every loader on a fixture in its upstream format, bad input, and the download path."""

import json

from helpers import fixtures
import pytest

from medslm.data import load_dataset
from medslm.data.examples import Classification, Document, MultipleChoice, OpenQA, Rubric
from medslm.errors import DataError


def test_pubmedqa_splits(tmp_path):
    root = fixtures.pubmedqa(tmp_path / "p")
    test = load_dataset("pubmedqa", split="test", path=root)
    train = load_dataset("pubmedqa", split="train", path=root)
    assert sorted(e.id for e in test) == ["pubmedqa-1000", "pubmedqa-1001"]
    assert len(train) == 4 and all(isinstance(e, MultipleChoice) for e in train)
    assert test[0].context == "Background 0.\nResults 0 were significant."
    assert test[0].meta["long_answer"] == "Conclusion 0." and test[0].answer == 0


def test_medmcqa(tmp_path):
    ex = load_dataset("medmcqa", path=fixtures.medmcqa(tmp_path / "m"))
    assert {e.split for e in ex} == {"train", "validation"}
    v = [e for e in ex if e.split == "validation"]
    assert [e.answer for e in v] == [0, 1, 2, 3, 0] and v[0].options == ["a", "b", "c", "d"]
    assert v[0].meta["exp"] == "because"


def test_medqa(tmp_path):
    ex = load_dataset("medqa", path=fixtures.medqa(tmp_path / "q"))
    assert sorted({e.split for e in ex}) == ["test", "train", "validation"]
    assert ex[0].options == ["flu", "cold", "sepsis", "malaria"]


def test_mmlu_medical(tmp_path):
    ex = load_dataset("mmlu_medical", split="test", path=fixtures.mmlu(tmp_path / "mm"))
    assert len(ex) == 4 and {e.meta["subject"] for e in ex} == {"anatomy", "medical_genetics"}
    assert ex[0].question.endswith("with a comma?\nand a second line")  # quoted newline kept
    assert len(load_dataset("mmlu_medical", split="dev", path=tmp_path / "mm")) == 4


def test_medquad_both_schemas(tmp_path):
    ex = load_dataset("medquad", path=fixtures.medquad(tmp_path / "mq"))
    assert len(ex) == 33 and all(isinstance(e, OpenQA) for e in ex)
    assert {e.split for e in ex} == {"train", "test"}
    by = {e.id: e for e in ex}
    assert by["medquad-1-0000001_1-1"].answer == "A cancer of the blood."
    assert by["medquad-1-0000001_1-2"].meta["answered"] is False
    assert by["medquad-6-0000002-1"].source == "NINDS" and by["medquad-6-0000002-1"].meta["focus"] == "Stroke"


def test_medtext_fixed_split(tmp_path):
    root = fixtures.medtext(tmp_path / "t")
    a = load_dataset("medtext", path=root)
    b = load_dataset("medtext", path=root)
    assert [(e.id, e.split) for e in a] == [(e.id, e.split) for e in b]
    assert {e.split for e in a} == {"train", "test"}


def test_amega_weights(tmp_path):
    ex = load_dataset("amega", path=fixtures.amega(tmp_path / "a"))
    assert len(ex) == 2 and isinstance(ex[0], Rubric)
    q1 = next(e for e in ex if e.meta["question_id"] == "1")
    assert [c.weight for c in q1.criteria] == [2.0, 2.0, 2.0]  # section a: 4 pts / 2 criteria
    assert q1.case.startswith("A 60-year-old")


def test_drugcomb_summary(tmp_path):
    ex = load_dataset("drugcomb", path=fixtures.drugcomb_summary(tmp_path / "d"))
    assert len(ex) == 10 and isinstance(ex[0], Classification)
    assert ex[0].fields["tissue"] == "breast" and "Tissue: breast" in ex[0].text
    assert [e.label for e in ex] == [int(10.0 * i - 20 > 30) for i in range(10)]


def test_mimic3_fixture(tmp_path):
    ex = load_dataset("mimic3", path=fixtures.mimic3(tmp_path / "m3"))
    by = {e.id: e for e in ex}
    assert by["mimic3-101"].label == 1 and by["mimic3-100"].label == 0
    assert by["mimic3-101"].fields["age"] == "over 89"
    assert "Pt febrile,\nstarted on antibiotics" in by["mimic3-100"].text
    assert "expired" not in by["mimic3-101"].text.lower() and "DEAD" not in by["mimic3-101"].text


def test_mimic_diff_vqa(tmp_path):
    ex = load_dataset("mimic_diff_vqa", path=fixtures.mimic_diff_vqa(tmp_path / "v"))
    assert [e.split for e in ex] == ["train", "test"] and ex[1].meta["question_type"] == "difference"


def test_guidelines(tmp_path):
    ex = load_dataset("guidelines", path=fixtures.guidelines(tmp_path / "g"))
    assert len(ex) == 30 and isinstance(ex[0], Document) and ex[0].title == "Guideline 0"


def test_credentialed_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="credentialed.*physionet"):
        load_dataset("mimic3")


def test_missing_dataset_offline_is_an_error_not_empty(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("MEDSLM_UPSTREAM_PUBMEDQA", "http://127.0.0.1:9/")  # nothing listens there
    with pytest.raises(DataError, match="download of .* failed"):
        load_dataset("pubmedqa")


# ---------------------------------------------------------------------------------- bad input
def _jsonl(tmp_path, rows, name="validation.jsonl"):
    d = tmp_path / "bad"
    d.mkdir(exist_ok=True)
    (d / name).write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return d


GOOD = {"question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 1}

BAD_MEDMCQA = [
    ('{"question": "Q?", "opa": "a"', "line 1", "invalid JSON"),
    ({**GOOD, "cop": 7}, "field 'cop'", "not in 0..3"),
    ({**GOOD, "cop": "B"}, "field 'cop'", "expected int"),
    ({k: v for k, v in GOOD.items() if k != "opc"}, "field 'opc'", "missing"),
    ({**GOOD, "question": "   "}, "field 'question'", "empty"),
    ({**GOOD, "opa": None}, "field 'opa'", "missing"),
    ("[1, 2, 3]", "line 1", "expected a JSON object"),
]


@pytest.mark.parametrize("row,where,why", BAD_MEDMCQA)
def test_bad_medmcqa_records(tmp_path, row, where, why):
    d = _jsonl(tmp_path, [row, GOOD])
    with pytest.raises(DataError) as e:
        load_dataset("medmcqa", path=d)
    msg = str(e.value)
    assert "validation.jsonl" in msg and where in msg and why in msg
    ok = load_dataset("medmcqa", path=d, lenient=True)
    assert len(ok) == 1 and sum(ok.skipped.values()) == 1


def test_truncated_pubmedqa_json(tmp_path):
    root = fixtures.pubmedqa(tmp_path / "p")
    f = root / "ori_pqal.json"
    f.write_text(f.read_text()[:-40])
    with pytest.raises(DataError, match=r"ori_pqal.json: invalid JSON at line 1.*truncated"):
        load_dataset("pubmedqa", path=root)


def test_pubmedqa_bad_label(tmp_path):
    root = fixtures.pubmedqa(tmp_path / "p")
    data = json.loads((root / "ori_pqal.json").read_text())
    data["1003"]["final_decision"] = "perhaps"
    (root / "ori_pqal.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"record 1003, field 'final_decision': 'perhaps'"):
        load_dataset("pubmedqa", path=root)
    assert len(load_dataset("pubmedqa", path=root, lenient=True)) == 5


def test_bad_encoding(tmp_path):
    d = tmp_path / "mt"
    d.mkdir()
    (d / "medtext.csv").write_bytes("Prompt,Completion\nfi\xe8vre,x\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"medtext.csv: not UTF-8"):
        load_dataset("medtext", path=d)


def test_missing_column(tmp_path):
    d = tmp_path / "mt"
    d.mkdir()
    (d / "medtext.csv").write_text("Prompt,Answer\nq,a\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['Completion'\]"):
        load_dataset("medtext", path=d)


def test_amega_wrong_delimiter(tmp_path):
    root = fixtures.amega(tmp_path / "a")
    (root / "cases.csv").write_text("case_id,case_str\n1,x\n")
    with pytest.raises(DataError, match=r"cases.csv: missing column.*delimiter ';'"):
        load_dataset("amega", path=root)


def test_empty_answer_in_medtext(tmp_path):
    d = tmp_path / "mt"
    d.mkdir()
    (d / "medtext.csv").write_text("Prompt,Completion\nq1,a1\nq2,\n")
    with pytest.raises(DataError, match=r"line 3, field 'completion': empty"):
        load_dataset("medtext", path=d)


def test_medquad_broken_xml(tmp_path):
    root = fixtures.medquad(tmp_path / "mq")
    (root / "1_CancerGov_QA" / "0000009_1.xml").write_text("<Document><QAPairs>")
    with pytest.raises(DataError, match=r"0000009_1.xml: record document: invalid XML"):
        load_dataset("medquad", path=root)
    assert len(load_dataset("medquad", path=root, lenient=True)) == 33


def test_drugcomb_non_numeric_score(tmp_path):
    d = tmp_path / "dc"
    d.mkdir()
    (d / "s.tsv").write_text("drug_a\tdrug_b\tcell_line\tscore\tfold\nA\tB\tC\tNaN-ish\t1\n")
    with pytest.raises(DataError, match=r"field 'score': 'NaN-ish' is not a number"):
        load_dataset("drugcomb", path=d)


def test_mimic3_missing_table(tmp_path):
    root = fixtures.mimic3(tmp_path / "m")
    (root / "PATIENTS.csv").unlink()
    with pytest.raises(DataError, match=r"PATIENTS.csv not found"):
        load_dataset("mimic3", path=root)


def test_wrong_column_count(tmp_path):
    root = fixtures.mimic3(tmp_path / "m")
    with open(root / "DIAGNOSES_ICD.csv", "a") as f:
        f.write("3,10,100\n")
    with pytest.raises(DataError, match=r"DIAGNOSES_ICD.csv: record line 4: 3 columns, expected 5"):
        load_dataset("mimic3", path=root)


def test_unknown_split_names_the_splits(tmp_path):
    with pytest.raises(DataError, match=r"no records in split 'validation'.*splits here: test, train"):
        load_dataset("pubmedqa", split="validation", path=fixtures.pubmedqa(tmp_path / "p"))


def test_unknown_dataset_suggests():
    from medslm.errors import MedslmError

    with pytest.raises(MedslmError, match="Did you mean pubmedqa"):
        load_dataset("pubmed_qa")


# ---------------------------------------------------------------------------------- downloads
@pytest.fixture
def server(tmp_path):
    import http.server
    import threading

    files: dict[str, bytes] = {}
    hits: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            hits.append(self.path)
            rel = self.path.split("/data/", 1)[-1]  # a file by its path, else by its name
            name = rel if rel in files else self.path.rsplit("/", 1)[-1]
            if name not in files:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[name])))
            self.end_headers()
            self.wfile.write(files[name])

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/data", files, hits
    srv.shutdown()


def _serve_pubmedqa(tmp_path, files):
    src = fixtures.pubmedqa(tmp_path / "upstream")
    for n in ("ori_pqal.json", "test_ground_truth.json"):
        files[n] = (src / n).read_bytes()
    return src


def test_download_checksum_and_cache(tmp_path, monkeypatch, server):
    import hashlib

    from medslm.data import get_spec

    url, files, hits = server
    _serve_pubmedqa(tmp_path, files)
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(tmp_path / "no-mirror"))
    monkeypatch.setenv("MEDSLM_UPSTREAM_PUBMEDQA", url)
    spec = get_spec("pubmedqa")
    pins = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    monkeypatch.setattr(spec, "sha256", pins)
    ex = load_dataset("pubmedqa", split="test")
    assert len(ex) == 2 and len(hits) == 2
    sums = (ex.root / "SHA256SUMS").read_text()
    assert pins["ori_pqal.json"] in sums
    again = load_dataset("pubmedqa", split="test")  # from the cache: no new request
    assert len(again) == 2 and len(hits) == 2
    # a cached file changed on disk is detected
    (ex.root / "ori_pqal.json").write_text("{}")
    with pytest.raises(DataError, match="changed since download"):
        load_dataset("pubmedqa")


def test_corrupted_download_is_not_cached(tmp_path, monkeypatch, server):
    import hashlib

    from medslm.data import get_spec
    from medslm.data.sources import cache_root

    url, files, hits = server
    _serve_pubmedqa(tmp_path, files)
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(tmp_path / "no-mirror"))
    monkeypatch.setenv("MEDSLM_UPSTREAM_PUBMEDQA", url)
    spec = get_spec("pubmedqa")
    good = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    monkeypatch.setattr(spec, "sha256", good)
    files["ori_pqal.json"] = files["ori_pqal.json"].replace(b"mortality", b"morbidity")  # bit rot
    with pytest.raises(DataError, match="SHA-256 .* expected .* Not cached"):
        load_dataset("pubmedqa")
    assert not cache_root(spec).exists()
    # unpinned but unparseable: also refused
    monkeypatch.setattr(spec, "sha256", {})
    files["ori_pqal.json"] = files["ori_pqal.json"][:50]
    with pytest.raises(DataError, match="does not parse, not cached"):
        load_dataset("pubmedqa")
    assert not cache_root(spec).exists()
    assert not [p for p in cache_root(spec).parent.iterdir()]  # no temp dirs left


def test_overlap_exact_and_near():
    from medslm.data.examples import OpenQA
    from medslm.data.overlap import find_overlap

    base = "what are the treatments for chronic kidney disease stage three in older adults with diabetes"
    a = [OpenQA(id="a1", question=base, answer=""),
         OpenQA(id="a2", question=base + " mellitus", answer=""),
         OpenQA(id="a3", question="how is malaria transmitted", answer="")]
    b = [OpenQA(id="b1", question=base.upper() + "?", answer=""),
         OpenQA(id="b2", question="what causes asthma", answer="")]
    m = {(x.a, x.b): x.kind for x in find_overlap(a, b, threshold=0.8)}
    assert m[("a1", "b1")] == "exact" and m[("a2", "b1")] == "near" and len(m) == 2


# ------------------------------------------------------------ MeQSum (xlsx) and MedSafetyBench (CSV)
def test_meqsum_workbook_and_fixed_dev_split(tmp_path):
    ex = load_dataset("meqsum", path=fixtures.meqsum(tmp_path / "q"))
    assert len(ex) == 40 and all(isinstance(e, OpenQA) for e in ex)
    e = next(e for e in ex if e.id == "meqsum-1003.txt")
    assert e.question.startswith("SUBJECT: drug 3\nMESSAGE:") and e.answer == "Who manufactures drug 3?"
    assert e.meta["row"] == 5  # the sheet's own row number (header is row 1)
    dev = load_dataset("meqsum", split="dev", path=tmp_path / "q")
    again = load_dataset("meqsum", split="dev", path=fixtures.meqsum(tmp_path / "q2"))
    assert 0 < len(dev) < 40 and [e.id for e in dev] == [e.id for e in again]  # by hash: same everywhere


def test_meqsum_bad_rows_name_the_row(tmp_path):
    import openpyxl

    root = fixtures.meqsum(tmp_path / "q", n=3)
    f = root / "MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx"
    wb = openpyxl.load_workbook(f)
    wb.active["C3"] = None  # row 3's summary
    wb.save(f)
    with pytest.raises(DataError, match=r"row 3, field 'Summary': missing|row 3, field 'Summary': empty"):
        load_dataset("meqsum", path=root)
    assert len(load_dataset("meqsum", path=root, lenient=True)) == 2
    wb.active["C1"] = "Summ"  # the header names no Summary column
    wb.save(f)
    with pytest.raises(DataError, match="lacks column"):
        load_dataset("meqsum", path=root)
    f.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .xlsx"):
        load_dataset("meqsum", path=root)


def test_medsafety_categories_generators_and_splits(tmp_path):
    root = fixtures.medsafety(tmp_path / "s")
    ex = load_dataset("medsafety", path=root)
    assert len(ex) == 24 and len({e.id for e in ex}) == 24
    assert {e.meta["category"] for e in ex} == {1, 4} and {e.meta["generator"] for e in ex} == {"gpt4", "llama2"}
    assert {e.split for e in ex} <= {"train", "dev"} and ex[0].answer.startswith("I'm sorry")
    t = root / "test" / "gpt4"  # the upstream test part, when a user has it, is its own split
    t.mkdir(parents=True)
    (t / "med_safety_demonstrations_category_2.csv").write_text(
        ',harmful_medical_request,safe_response\n0,"Request?","I cannot."\n')
    test = load_dataset("medsafety", split="test", path=root)
    assert [e.meta["category"] for e in test] == [2]


def test_medsafety_bad_files(tmp_path):
    root = fixtures.medsafety(tmp_path / "s", per_file=2)
    f = root / "train" / "gpt4" / "med_safety_demonstrations_category_1.csv"
    f.write_text(',harmful_medical_request,safe_response\n0,"Hide this error?",""\n')
    with pytest.raises(DataError, match=r"category_1.csv: record line 2, field 'safe_response': empty"):
        load_dataset("medsafety", path=root)
    f.rename(root / "train" / "gpt4" / "demonstrations.csv")
    with pytest.raises(DataError, match="names no category"):
        load_dataset("medsafety", path=root)


@pytest.mark.parametrize("name,fixture,n", [("meqsum", "meqsum", 40), ("medsafety", "medsafety", 24)])
def test_new_sets_download_from_their_repositories(tmp_path, monkeypatch, server, name, fixture, n):
    url, files, hits = server
    src = getattr(fixtures, fixture)(tmp_path / "upstream")
    if name == "medsafety":  # upstream has all nine categories of both generators
        for g in ("gpt4", "llama2"):
            for c in range(1, 10):
                f = src / "train" / g / f"med_safety_demonstrations_category_{c}.csv"
                if not f.exists():
                    f.write_text(f',harmful_medical_request,safe_response\n0,"Request {g} {c}?","I cannot."\n')
        n = 24 + 14
    for p in src.rglob("*"):
        if p.is_file():
            files[p.relative_to(src).as_posix()] = p.read_bytes()
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(tmp_path / "no-mirror"))
    monkeypatch.setenv("MEDSLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(f"MEDSLM_UPSTREAM_{name.upper()}", url)
    ex = load_dataset(name)
    assert len(ex) == n and hits
