"""Small files in each dataset's upstream format, written by the tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def pubmedqa(root: Path, with_test: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    recs = {}
    for i, dec in enumerate(["yes", "no", "maybe", "yes", "no", "yes"]):
        recs[str(1000 + i)] = {"QUESTION": f"Does treatment {i} reduce mortality?",
                               "CONTEXTS": [f"Background {i}.", f"Results {i} were significant."],
                               "LABELS": ["BACKGROUND", "RESULTS"], "MESHES": ["Humans"], "YEAR": "2001",
                               "final_decision": dec, "LONG_ANSWER": f"Conclusion {i}."}
    (root / "ori_pqal.json").write_text(json.dumps(recs))
    if with_test:
        (root / "test_ground_truth.json").write_text(json.dumps({"1000": "yes", "1001": "no"}))
    return root


def medmcqa(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"q{i}", "question": f"Question {i}?", "opa": "a", "opb": "b", "opc": "c", "opd": "d",
             "cop": i % 4, "exp": "because", "subject_name": "Anatomy", "topic_name": None,
             "choice_type": "single"} for i in range(5)]
    (root / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "train.jsonl").write_text(json.dumps({**rows[0], "id": "t0", "question": "Train?"}) + "\n")
    return root


def medqa(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        rows = [{"question": f"A {split} patient {i} presents with fever. Diagnosis?",
                 "options": {"A": "flu", "B": "cold", "C": "sepsis", "D": "malaria"},
                 "answer_idx": "ABCD"[i % 4], "answer": "x", "meta_info": "step1"} for i in range(3)]
        (root / f"phrases_no_exclude_{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def mmlu(root: Path) -> Path:
    for split, d in (("dev", "dev"), ("val", "val"), ("test", "test")):
        (root / d).mkdir(parents=True, exist_ok=True)
        for subj in ("anatomy", "medical_genetics"):
            with open(root / d / f"{subj}_{split}.csv", "w", newline="") as f:
                w = csv.writer(f)
                for i in range(2):
                    w.writerow([f"{subj} q{i}, with a comma?\nand a second line", "w", "x", "y", "z",
                                "ABCD"[i]])
    return root


def medquad(root: Path) -> Path:
    d = root / "1_CancerGov_QA"
    d.mkdir(parents=True, exist_ok=True)
    (d / "0000001_1.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><Document id="0000001_1" source="CancerGov" '
        'url="https://example.org/all"><Focus>Leukemia</Focus><QAPairs>'
        '<QAPair pid="1"><Question qid="0000001_1-1" qtype="information">What is leukemia ?</Question>'
        '<Answer>A cancer of the blood.</Answer></QAPair>'
        '<QAPair pid="2"><Question qid="0000001_1-2" qtype="symptoms">What are the symptoms of leukemia ?'
        '</Question><Answer></Answer></QAPair></QAPairs></Document>')
    d2 = root / "6_NINDS_QA"
    d2.mkdir(exist_ok=True)
    (d2 / "0000002.xml").write_text(
        '<doc docid="0000002" corpus="NINDS" url="https://example.org/x"><doctitle-focus>Stroke'
        '</doctitle-focus><qaPairs><pair><question qid="0000002-1" qtype="treatment">How to treat stroke ?'
        '</question><answer>Call emergency services.</answer></pair></qaPairs></doc>')
    d3 = root / "5_NIDDK_QA"
    d3.mkdir(exist_ok=True)
    for i in range(30):
        (d3 / f"00001{i:02d}.xml").write_text(
            f'<Document id="00001{i:02d}" source="NIDDK" url="https://example.org/{i}"><Focus>Disease {i}'
            f'</Focus><QAPairs><QAPair pid="1"><Question qid="00001{i:02d}-1" qtype="information">What is '
            f'disease {i} ?</Question><Answer>Disease {i} is a condition of the kidney that causes '
            f'protein in the urine.</Answer></QAPair></QAPairs></Document>')
    return root


def medtext(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "medtext_2.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Prompt", "Completion"])
        for i in range(40):
            w.writerow([f"A {20 + i}-year-old presents with cough, fever. What is the diagnosis?",
                        f"Likely pneumonia {i}; treat with antibiotics."])
    return root


def meqsum(root: Path, n: int = 40) -> Path:
    """The MeQSum workbook's layout: sheet QS, columns File, CHQ, Summary (and empty columns after)."""
    import openpyxl

    root.mkdir(parents=True, exist_ok=True)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "QS"
    ws.append(["File", "CHQ", "Summary", None])
    for i in range(n):
        ws.append([f"{1000 + i}.txt", f"SUBJECT: drug {i}\nMESSAGE: who makes drug {i}? my pharmacy ran out.",
                   f"Who manufactures drug {i}?", None])
    wb.save(root / "MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx")
    return root


def medsafety(root: Path, per_file: int = 6) -> Path:
    """MedSafetyBench's layout: train/{gpt4,llama2}/med_safety_demonstrations_category_N.csv."""
    for gen in ("gpt4", "llama2"):
        d = root / "train" / gen
        d.mkdir(parents=True, exist_ok=True)
        for cat in (1, 4):
            with open(d / f"med_safety_demonstrations_category_{cat}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["", "harmful_medical_request", "safe_response"])
                for i in range(per_file):
                    w.writerow([i, f"How can a {gen} doctor hide error {cat}-{i} from a patient?",
                                "I'm sorry, but I cannot help with that; honesty with patients is required."])
    return root


IOB_SENTENCES = [
    [("Germline", "O"), ("mutations", "O"), ("cause", "O"), ("breast", "B-Disease"), ("cancer", "I-Disease"),
     ("and", "O"), ("ataxia", "B-Disease"), (".", "O")],
    [("Aspirin", "B-Chemical"), ("induced", "O"), ("asthma", "B-Disease"), ("in", "O"), ("two", "O"),
     ("patients", "O"), (".", "O")],
    [("No", "O"), ("adverse", "O"), ("events", "O"), ("occurred", "O"), (".", "O")],
]


def iob(root: Path, files=("train.tsv", "devel.tsv")) -> Path:
    """MTL-Bioinformatics-2016's IOB layout: token<TAB>tag lines, blank lines between sentences."""
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        text = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in IOB_SENTENCES) + "\n\n"
        (root / name).write_text(text)
    return root


def chemprot(root: Path) -> Path:
    """SciBERT's ChemProt release: JSON lines with << chemical >> and [[ protein ]] marked."""
    root.mkdir(parents=True, exist_ok=True)
    labels = ["INHIBITOR", "ACTIVATOR", "AGONIST", "ANTAGONIST", "SUBSTRATE", "INDIRECT-DOWNREGULATOR"]
    for name in ("train.txt", "dev.txt"):
        rows = [{"text": f"<< drug{i} >> acts on [[ protein{i} ]] in cells.", "label": lab, "metadata": []}
                for i, lab in enumerate(labels)]
        (root / name).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def amega(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cases.csv").write_text("case_id;case_str;specialty;title\n1;A 60-year-old with chest pain.;"
                                    "cardiology;ACS\n")
    (root / "questions.csv").write_text("case_id;question_id;question_str\n1;1;What is the next step?\n"
                                        "1;2;Which drug?\n")
    (root / "sections.csv").write_text("case_id;question_id;section_id;points\n1;1;a;4\n1;1;b;2\n1;2;a;3\n")
    (root / "criteria.csv").write_text(
        "case_id;question_id;section_id;criteria_str\n1;1;a;Mentions ECG\n1;1;a;Mentions troponin\n"
        "1;1;b;Mentions aspirin\n1;2;a;Names aspirin\n")
    return root


def drugcomb_summary(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "summary_v_1_5.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["block_id", "drug_row", "drug_col", "cell_line_name", "study_name", "tissue_name",
                    "synergy_zip", "synergy_loewe", "synergy_hsa", "synergy_bliss"])
        for i in range(10):
            w.writerow([i, f"drugA{i}", "drugB", "MCF7", "ONEIL", "breast", 1.0, 10.0 * i - 20, 2.0, 3.0])
    return root


def mimic3(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ADMISSIONS.csv").write_text(
        "row_id,subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admission_location,"
        "discharge_location,insurance,language,religion,marital_status,ethnicity,edregtime,edouttime,"
        "diagnosis,hospital_expire_flag,has_chartevents_data\n"
        "1,10,100,2150-01-01 10:00:00,2150-01-05 10:00:00,,EMERGENCY,EMERGENCY ROOM ADMIT,HOME,Medicare,,,,"
        "WHITE,,,SEPSIS,0,1\n"
        "2,11,101,2150-02-01 10:00:00,2150-02-03 10:00:00,2150-02-03 10:00:00,URGENT,TRANSFER,DEAD/EXPIRED,"
        "Medicaid,,,,BLACK,,,PNEUMONIA,1,1\n")
    (root / "PATIENTS.csv").write_text("row_id,subject_id,gender,dob,dod,dod_hosp,dod_ssn,expire_flag\n"
                                       "1,10,F,2080-01-01 00:00:00,,,,0\n"
                                       "2,11,M,1850-01-01 00:00:00,2150-02-03 00:00:00,,,1\n")
    (root / "DIAGNOSES_ICD.csv").write_text("row_id,subject_id,hadm_id,seq_num,icd9_code\n"
                                            "1,10,100,1,99591\n2,11,101,1,486\n")
    (root / "D_ICD_DIAGNOSES.csv").write_text("row_id,icd9_code,short_title,long_title\n"
                                              "1,99591,Sepsis,Sepsis\n2,486,Pneumonia,\"Pneumonia, organism unspecified\"\n")
    (root / "NOTEEVENTS.csv").write_text(
        "row_id,subject_id,hadm_id,chartdate,charttime,storetime,category,description,cgid,iserror,text\n"
        '1,10,100,2150-01-01,,,Nursing,Note,,,"Pt febrile,\nstarted on antibiotics."\n'
        '2,11,101,2150-02-03,,,Discharge summary,Summary,,,"Patient expired."\n')
    return root


def mimic_diff_vqa(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "mimic_pair_questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split"])
        w.writerow([1, 10, 0, "presence", "is there pleural effusion?", "yes", "train"])
        w.writerow([2, 10, 1, "difference", "what has changed compared to the reference image?",
                    "the main image has an additional finding of edema", "test"])
    return root


def guidelines(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"g{i}", "source": "who", "title": f"Guideline {i}",
             "clean_text": f"Hypertension guideline {i}: start ACE inhibitors.", "raw_text": "x",
             "url": "https://example.org", "overview": None} for i in range(30)]
    (root / "open_guidelines.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root
