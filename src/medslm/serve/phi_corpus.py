"""A seeded synthetic corpus for measuring the redactor (:mod:`medslm.serve.safety`).

``phi_examples(n, seed)`` yields ``(category, sentence, identifier)``: a medical sentence with one
synthetic identifier of each category in several real-world formats. ``clean_sentences(n, seed)``
yields PHI-free medical sentences full of the numbers a redactor must leave alone (doses, lab
values, vital signs, ranges, years, scores). Nothing here is real patient data.
"""

from __future__ import annotations

import random
from typing import Iterator

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
ABBR = ["Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec"]
STATES = ["MA", "NY", "CA", "TX", "IL", "WA", "FL", "OH", "PA", "GA"]

CONTEXT = [
    "Patient seen in clinic for follow-up of type 2 diabetes; {x}; metformin 500 mg BID continued.",
    "Discharge summary: admitted with community-acquired pneumonia, {x}, started ceftriaxone 1 g IV daily.",
    "Echocardiogram showed EF 35%; {x}. Plan: titrate carvedilol to 12.5 mg twice daily.",
    "{x}. Hemoglobin 9.8 g/dL, creatinine 1.4 mg/dL, potassium 4.1 mmol/L.",
    "Chest pain resolved after nitroglycerin 0.4 mg SL x2; {x}; troponin 0.02 ng/mL.",
    "Follow-up scheduled; {x}. BP 132/84, HR 78, SpO2 97% on room air.",
]


def _date(r: random.Random) -> str:
    y, m, d = r.randint(1930, 2025), r.randint(1, 12), r.randint(1, 28)
    f = r.randrange(7)
    if f == 0:
        return f"{m}/{d}/{y}"
    if f == 1:
        return f"{m:02d}/{d:02d}/{y % 100:02d}"
    if f == 2:
        return f"{y}-{m:02d}-{d:02d}"
    if f == 3:
        return f"{MONTHS[m - 1]} {d}, {y}"
    if f == 4:
        return f"{d} {MONTHS[m - 1]} {y}"
    if f == 5:
        return f"{r.choice(ABBR)} {d}{r.choice(['', 'th'])}"
    return f"{m}-{d}-{y}"


def _phone(r: random.Random) -> str:
    a, b, c = r.randint(201, 989), r.randint(200, 999), r.randint(0, 9999)
    return r.choice([f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
                     f"1-{a}-{b}-{c:04d}"])


def _ident(cat: str, r: random.Random) -> tuple[str, str]:
    """(text to insert, the identifier inside it that must be redacted)."""
    if cat == "DATE":
        d = _date(r)
        return r.choice([f"admitted on {d}", f"DOB {d}", f"last visit {d}", f"surgery was {d}"]), d
    if cat == "AGE":
        a = r.randint(90, 109)
        form = r.choice([f"{a}-year-old", f"{a} year old", f"{a} y/o", f"{a} yo", f"{a} years old"])
        return r.choice([f"a {form} woman", f"this {form} man", f"patient is a {form}"]), form
    if cat == "PHONE":
        p = _phone(r)
        return r.choice([f"call back at {p}", f"fax {p}", f"phone: {p}", f"daughter's cell {p}"]), p
    if cat == "EMAIL":
        e = f"{r.choice(['jdoe', 'm.smith', 'pt_4432', 'carer'])}{r.randint(1, 999)}@{r.choice(['example.org', 'mail.example.com', 'clinic.example.net'])}"
        return r.choice([f"e-mail {e}", f"contact {e}", f"portal message from {e}"]), e
    if cat == "SSN":
        s = f"{r.randint(100, 899)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}"
        if r.random() < 0.3:
            s2 = s.replace("-", "")
            return f"SSN {s2}", s2
        return r.choice([f"SSN {s}", f"social security number {s}", f"ss# {s}"]), s
    if cat == "ID":
        n = r.choice([f"{r.randint(1000000, 99999999)}", f"A{r.randint(100000, 9999999)}",
                      f"{r.randint(100, 999)}-{r.randint(1000, 99999)}"])
        lab = r.choice(["MRN", "MRN:", "medical record number", "account number", "acct #", "member ID",
                        "health plan number", "policy number", "license number", "DEA #", "NPI"])
        return f"{lab} {n}", n
    if cat == "URL":
        u = r.choice([f"https://portal.example.org/patient/{r.randint(1000, 99999)}",
                      f"http://www.example.com/records?id={r.randint(100, 9999)}",
                      f"www.example.net/chart/{r.randint(10, 999)}"])
        return f"results posted at {u}", u
    if cat == "IP":
        ip = ".".join(str(r.randint(1, 254)) for _ in range(4))
        return r.choice([f"login from {ip}", f"device IP {ip}"]), ip
    if cat == "ZIP":
        z = f"{r.randint(1001, 99950):05d}" + (f"-{r.randint(1000, 9999)}" if r.random() < 0.2 else "")
        return r.choice([f"lives in Springfield, {r.choice(STATES)} {z}", f"ZIP code {z}", f"zip: {z}"]), z
    raise ValueError(cat)


def phi_examples(n_per_category: int = 1000, seed: int = 0) -> Iterator[tuple[str, str, str]]:
    from medslm.serve.safety import CATEGORIES

    r = random.Random(seed)
    for cat in CATEGORIES:
        for _ in range(n_per_category):
            ins, ident = _ident(cat, r)
            yield cat, r.choice(CONTEXT).format(x=ins), ident


CLEAN = [
    "Metformin {a} mg twice daily; HbA1c {b}% in {y}.",
    "BP {s}/{d} mmHg, HR {h} bpm, temperature 37.{t} C, RR 16.",
    "Potassium {k} mmol/L (reference 3.5-5.0), sodium 1{n} mmol/L, glucose {g} mg/dL.",
    "Diagnosed with hypertension in {y}; lisinopril {l} mg daily since then.",
    "Troponin 0.0{t} ng/mL at 0 and 3 hours; ECG with QTc {q} ms.",
    "Warfarin {w} mg with INR 2.{t}; target 2.0-3.0 per the {y} guideline.",
    "GCS 15, NIHSS {t}, mRS 2; CHA2DS2-VASc score {t}, HAS-BLED 1.",
    "Creatinine 1.{t} mg/dL, eGFR {e} mL/min/1.73m2, urine output 0.5 mL/kg/h.",
    "The 2019 ESC guideline recommends a dose of {a} mg; in 2021 the trial enrolled {e}0 patients.",
    "ICD-10 code E11.{t} recorded; 1 in {e} patients had grade 3 toxicity (p = 0.0{t}).",
    "Amoxicillin {a} mg every 8 hours for 7 days; weight {e} kg, BMI 2{t}.{t}.",
    "Ejection fraction {e}%, LVEDD 5.{t} cm, pulmonary artery pressure {h}/1{t} mmHg.",
]


def clean_sentences(n: int = 2000, seed: int = 0) -> Iterator[str]:
    r = random.Random(seed + 1)
    for _ in range(n):
        yield r.choice(CLEAN).format(
            a=r.choice([250, 500, 850, 1000]), b=round(r.uniform(5, 12), 1), y=r.randint(1990, 2025),
            s=r.randint(95, 190), d=r.randint(55, 110), h=r.randint(50, 130), t=r.randint(1, 9),
            k=round(r.uniform(2.8, 6.0), 1), n=r.randint(30, 49), g=r.randint(60, 400),
            l=r.choice([5, 10, 20, 40]), q=r.randint(380, 520), w=r.choice([2, 5, 7.5]),
            e=r.randint(15, 90))
