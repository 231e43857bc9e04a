"""The analyst's day, end to end: upload a Chinese-named Excel file of sales, clean it, chart the monthly
totals with a Chinese title, save csv/json/png/docx/model files in the workspace, and download them.

    python examples/walkthrough.py [--url URL] [--token TOKEN] [--out DIR]

The server and token default to ``$WORKBENCH_URL`` and ``$WORKBENCH_TOKEN`` (or a local server's admin
token).  Needs nothing but Workbench on this side: the sample spreadsheet is written with the standard
library, and pandas, matplotlib, python-docx and scikit-learn run in the kernel.
"""

from __future__ import annotations

import argparse
import random
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from workbench.client import Event, Execution, Session, Workbench

SOURCE = "销售数据2023.xlsx"
OUTPUTS = (
    "清洗后销售数据.csv",
    "销售分析报告.json",
    "月度销售额趋势.png",
    "销售分析报告.docx",
    "销售预测模型.joblib",
)

CLEAN = f"""
import pandas as pd

raw = pd.read_excel("{SOURCE}", sheet_name="销售明细")
df = raw.dropna(how="all").drop_duplicates()
df["日期"] = pd.to_datetime(df["日期"], format="mixed")
amounts = df["销售额"].astype(str).str.replace(r"[¥,\\s]", "", regex=True)
df["销售额"] = pd.to_numeric(amounts, errors="coerce")
df = df.dropna(subset=["销售额"])
df.to_csv("清洗后销售数据.csv", index=False, encoding="utf-8-sig")
print(f"原始 {{len(raw)}} 行，清洗后 {{len(df)}} 行")
"""

CHART = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

monthly = df.groupby(df["日期"].dt.strftime("%Y-%m"))["销售额"].sum()
fig, ax = plt.subplots(figsize=(10, 5))
ax.bar(monthly.index, monthly.values, color="steelblue")
ax.set_title("2023年月度销售额趋势")
ax.set_xlabel("月份")
ax.set_ylabel("销售额（元）")
ax.tick_params(axis="x", labelrotation=45)
fig.tight_layout()
fig.savefig("月度销售额趋势.png", dpi=120)
plt.close(fig)
print(monthly.round(2).to_string())
"""

REPORT = """
import json

from docx import Document
from docx.shared import Inches

summary = {
    "总销售额": round(float(df["销售额"].sum()), 2),
    "平均月销售额": round(float(monthly.mean()), 2),
    "最佳月份": monthly.idxmax(),
    "各地区销售额": df.groupby("地区")["销售额"].sum().round(2).to_dict(),
    "月度销售额": monthly.round(2).to_dict(),
}
with open("销售分析报告.json", "w", encoding="utf-8") as stream:
    json.dump(summary, stream, ensure_ascii=False, indent=2)

document = Document()
document.add_heading("2023年销售分析报告", level=1)
document.add_paragraph(f"总销售额 {summary['总销售额']:,.2f} 元，最佳月份 {summary['最佳月份']}。")
document.add_picture("月度销售额趋势.png", width=Inches(6))
table = document.add_table(rows=1, cols=2)
table.rows[0].cells[0].text, table.rows[0].cells[1].text = "月份", "销售额"
for month, total in summary["月度销售额"].items():
    row = table.add_row()
    row.cells[0].text, row.cells[1].text = month, f"{total:,.2f}"
document.save("销售分析报告.docx")
print(json.dumps({key: summary[key] for key in ("总销售额", "最佳月份")}, ensure_ascii=False))
"""

MODEL = """
import joblib
from sklearn.ensemble import RandomForestRegressor

features = pd.get_dummies(df[["地区", "产品"]]).assign(月=df["日期"].dt.month)
model = RandomForestRegressor(n_estimators=50, random_state=0).fit(features, df["销售额"])
joblib.dump({"model": model, "columns": list(features.columns)}, "销售预测模型.joblib")
print(f"R² (训练集) = {model.score(features, df['销售额']):.3f}")
"""


def show(event: Event) -> None:
    """Print the kernel's output as it streams in."""
    if event["type"] == "stream":
        print(event["text"], end="", flush=True)


def step(session: Session, title: str, code: str) -> Execution:
    print(f"\n== {title}")
    result = session.run(code, timeout=300, on_output=show)
    if not result.ok:
        error = result.error or {}
        msg = f"{title} failed: {result.status} {error.get('ename')}: {error.get('evalue')}"
        raise SystemExit(msg)
    return result


def walkthrough(workbench: Workbench, out: Path) -> list[Path]:
    """Run the whole scenario in a fresh session; returns the downloaded files."""
    out.mkdir(parents=True, exist_ok=True)
    source = write_sample_workbook(out / SOURCE)
    with workbench.create_session(metadata={"scenario": "销售分析"}) as session:
        print(f"session {session.id}: uploading {source.name}")
        session.upload(source, progress=True)
        step(session, "清洗数据", CLEAN)
        step(session, "月度销售额图表", CHART)
        step(session, "报告 (json, docx)", REPORT)
        step(session, "预测模型", MODEL)
        print("\n== 工作区文件")
        for entry in session.files():
            print(f"{entry.size:>10}  {entry.name}")
        downloads = out / "下载"
        downloads.mkdir(exist_ok=True)
        return [session.download(name, downloads) for name in (SOURCE, *OUTPUTS)]


# A sample spreadsheet, written with the standard library (with pandas at hand: DataFrame.to_excel).

REGIONS = ("华东", "华北", "华南", "西南")
PRODUCTS = ("笔记本电脑", "显示器", "机械键盘")


def sample_rows(count: int = 240, seed: int = 2023) -> list[list[str | float]]:
    """Sales lines of 2023 with the usual mess: amounts as text with ¥ and commas, gaps, duplicates."""
    rng = random.Random(seed)
    rows: list[list[str | float]] = [["日期", "地区", "产品", "销售额"]]
    for n in range(count):
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        date = f"2023-{month:02d}-{day:02d}" if n % 3 else f"2023/{month}/{day}"
        amount: str | float = round(rng.uniform(800, 9000) * (1 + month / 12), 2)
        if n % 37 == 0:
            amount = f"¥{amount:,.2f}"
        elif n % 53 == 0:
            amount = ""
        rows.append([date, rng.choice(REGIONS), rng.choice(PRODUCTS), amount])
    rows.extend([rows[5], rows[6], ["", "", "", ""]])
    return rows


def _cell(column: int, row: int, value: str | float) -> str:
    ref = f"{'ABCD'[column]}{row}"
    if isinstance(value, float):
        return f'<c r="{ref}"><v>{value}</v></c>'
    return f'<c r="{ref}" t="inlineStr"><is><t>{escape(value)}</t></is></c>'


def write_sample_workbook(path: Path) -> Path:
    """A minimal one-sheet xlsx (sheet 销售明细) holding ``sample_rows()``."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    relations = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    package = "http://schemas.openxmlformats.org/package/2006/relationships"
    content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    rows = "".join(
        f'<row r="{r}">{"".join(_cell(c, r, value) for c, value in enumerate(cells) if value != "")}</row>'
        for r, cells in enumerate(sample_rows(), start=1)
    )
    parts = {
        "[Content_Types].xml": '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        f'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{content_type}.sheet.main+xml"/>'
        f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{content_type}.worksheet+xml"/>'
        "</Types>",
        "_rels/.rels": f'<Relationships xmlns="{package}"><Relationship Id="rId1" '
        f'Type="{relations}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'<workbook xmlns="{main}" xmlns:r="{relations}"><sheets>'
        '<sheet name="销售明细" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": f'<Relationships xmlns="{package}"><Relationship Id="rId1" '
        f'Type="{relations}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{main}"><sheetData>{rows}</sheetData></worksheet>',
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, xml in parts.items():
            archive.writestr(name, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + xml)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", help="server URL [WORKBENCH_URL]")
    parser.add_argument("--token", help="bearer token [WORKBENCH_TOKEN]")
    parser.add_argument("--out", type=Path, default=Path("walkthrough-output"), help="where files go")
    args = parser.parse_args()
    with Workbench(args.url, args.token) as workbench:
        downloaded = walkthrough(workbench, args.out)
    print("\n== 下载的文件")
    for path in downloaded:
        print(f"{path.stat().st_size:>10}  {path}")


if __name__ == "__main__":
    main()
