"""Invoice PDFs (fpdf2), in the invoice's locale, rendering Japanese and Chinese names.

Text is set in DejaVu Sans with Droid Sans Fallback behind it for every character DejaVu
lacks (CJK), both embedded (subset) from worker/data/fonts/ (see its README for sources
and licences), so the PDF reads the same on every machine and its text can be extracted
(fpdf2 writes a ToUnicode map).

A PDF is rendered from the stored invoice only (its issuer and customer were copied into
it when it was made), with the issue moment as the document date, so rendering it again
gives the same document: an issued invoice never changes. A `pending` invoice (a card
payment not yet settled) has no number and no PDF (seed 001: not downloadable meanwhile).
"""

from __future__ import annotations

from datetime import UTC
from importlib import resources
from pathlib import Path
from typing import Any

from fpdf import FPDF
from sqlalchemy.orm import Session

from worker.db.session import UnitOfWork
from worker.invoices import mails
from worker.invoices.models import Invoice, InvoiceKind, InvoiceStatus
from worker.invoices.service import get
from worker.kernel.errors import InvoiceState, ValidationError
from worker.outbox import templates as mail_templates
from worker.outbox.mail import Attachment

_LABELS: dict[str, dict[str, str]] = {
    "en": {
        InvoiceKind.PROFORMA: "Pro-forma invoice",
        InvoiceKind.FINAL: "Invoice",
        InvoiceKind.CREDIT_NOTE: "Credit note",
        "number": "Number",
        "date": "Date",
        "status": "Status",
        "issuer": "From",
        "customer": "Bill to",
        "account": "Account",
        "description": "Description",
        "amount": "Amount",
        "total": "Total",
        "line": "Prepaid balance top-up",
        "method": "Payment method",
        "reference": "Payment reference",
        "pay_to": "Please pay by bank transfer to",
        "beneficiary": "Beneficiary",
        "bank": "Bank",
        "quote": "Quote the reference so that we can find your payment.",
        "proforma_note": "This pro-forma is a request for payment, not a tax invoice.",
        "vat": "VAT ID",
        "corrects": "Corrects",
    },
    "ja": {
        InvoiceKind.PROFORMA: "見積請求書",
        InvoiceKind.FINAL: "請求書",
        InvoiceKind.CREDIT_NOTE: "クレジットノート",
        "number": "番号",
        "date": "発行日",
        "status": "状態",
        "issuer": "発行者",
        "customer": "請求先",
        "account": "アカウント",
        "description": "内容",
        "amount": "金額",
        "total": "合計",
        "line": "プリペイド残高のチャージ",
        "method": "お支払い方法",
        "reference": "振込参照番号",
        "pay_to": "下記口座へお振り込みください",
        "beneficiary": "受取人",
        "bank": "銀行",
        "quote": "お支払いを確認できるよう、参照番号を必ずご記入ください。",
        "proforma_note": "この見積請求書はお支払いのご依頼であり、税務上の請求書ではありません。",
        "vat": "登録番号",
        "corrects": "訂正対象",
    },
    "zh": {
        InvoiceKind.PROFORMA: "形式发票",
        InvoiceKind.FINAL: "发票",
        InvoiceKind.CREDIT_NOTE: "贷项通知单",
        "number": "编号",
        "date": "日期",
        "status": "状态",
        "issuer": "开票方",
        "customer": "付款方",
        "account": "帐户",
        "description": "说明",
        "amount": "金额",
        "total": "合计",
        "line": "预付余额充值",
        "method": "付款方式",
        "reference": "付款参考号",
        "pay_to": "请通过银行转账支付至",
        "beneficiary": "收款人",
        "bank": "银行",
        "quote": "请务必填写付款参考号，以便我们识别您的付款。",
        "proforma_note": "本形式发票为付款请求，并非税务发票。",
        "vat": "税号",
        "corrects": "更正",
    },
}


def _font(name: str) -> str:
    return str(resources.files("worker").joinpath("data", "fonts", name))


def _labels(locale: str) -> dict[str, str]:
    return _LABELS[mail_templates.resolve_locale(locale)]


def _money(invoice: Invoice) -> str:
    return mail_templates.format_money(invoice.amount, invoice.currency, invoice.locale)


class _Pdf(FPDF):
    def __init__(self) -> None:
        super().__init__(format="A4")
        self.set_margins(18, 18, 18)
        self.add_font("DejaVu", "", _font("DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", _font("DejaVuSans-Bold.ttf"))
        self.add_font("DroidFallback", "", _font("DroidSansFallbackFull.ttf"))
        # CJK (and anything else DejaVu lacks) from the fallback, bold or not.
        self.set_fallback_fonts(["DroidFallback"], exact_match=False)

    def use(self, *, size: float = 10, bold: bool = False) -> None:
        """Select DejaVu for the next text, always writing the font switch: after a piece
        of text drawn wholly in the fallback font, fpdf2 (2.8) still believes DejaVu is
        selected and would skip it, and the next Latin text would come out in the CJK
        font's encoding (garbage on screen and in text extraction)."""
        self.set_font("DroidFallback", "", size)
        self.set_font("DejaVu", "B" if bold else "", size)

    def text_line(self, text: str, *, size: float = 10, bold: bool = False, h: float = 6) -> None:
        self.use(size=size, bold=bold)
        self.multi_cell(0, h, mail_templates.one_line(text), new_x="LMARGIN", new_y="NEXT")

    def pair(self, label: str, value: str) -> None:
        self.use()
        self.cell(45, 6, label)
        self.use()
        self.multi_cell(0, 6, mail_templates.one_line(value), new_x="LMARGIN", new_y="NEXT")

    def row(self, label: str, amount: str, *, bold: bool = False, border: str = "") -> None:
        self.use(size=11 if bold else 10, bold=bold)
        self.cell(120, 8, label, border=border)
        self.use(size=11 if bold else 10, bold=bold)
        self.cell(0, 8, amount, border=border, align="R", new_x="LMARGIN", new_y="NEXT")


def render(invoice: Invoice) -> bytes:
    """The PDF of a numbered invoice. Raises InvoiceState for a pending one."""
    if invoice.status == InvoiceStatus.PENDING or invoice.number is None:
        raise InvoiceState(
            "invoice_id",
            "this invoice is pending (the card payment is not settled yet): no PDF until it "
            "is issued",
        )
    labels = _labels(invoice.locale)
    issuer: dict[str, Any] = invoice.issuer
    customer: dict[str, Any] = invoice.customer
    moment = invoice.issued_at or invoice.created_at
    pdf = _Pdf()
    pdf.set_title(f"{labels[invoice.kind]} {invoice.number}")
    pdf.set_author(str(issuer.get("name", "")))
    pdf.set_creation_date(moment.astimezone(UTC).replace(microsecond=0))
    pdf.add_page()
    pdf.text_line(f"{labels[invoice.kind]} {invoice.number}", size=18, bold=True, h=10)
    pdf.ln(2)
    pdf.pair(labels["number"], invoice.number)
    pdf.pair(labels["date"], moment.date().isoformat())
    pdf.pair(labels["status"], invoice.status)
    if invoice.corrects:
        corrected = (invoice.instructions or {}).get("corrects_number") or invoice.corrects
        pdf.pair(labels["corrects"], str(corrected))
    pdf.ln(4)
    pdf.text_line(labels["issuer"], bold=True)
    pdf.text_line(str(issuer.get("name", "")))
    pdf.text_line(str(issuer.get("address", "")))
    if issuer.get("vat_id"):
        pdf.text_line(f"{labels['vat']}: {issuer['vat_id']}")
    pdf.ln(4)
    pdf.text_line(labels["customer"], bold=True)
    if customer.get("company"):
        pdf.text_line(str(customer["company"]), size=12, bold=True)
    pdf.text_line(str(customer.get("name", "")))
    pdf.text_line(f"{labels['account']}: {customer.get('account_id', '')}")
    if customer.get("country"):
        pdf.text_line(str(customer["country"]))
    pdf.ln(6)
    pdf.row(labels["description"], labels["amount"], border="B")
    pdf.row(labels["line"], _money(invoice))
    pdf.row(labels["total"], _money(invoice), bold=True, border="T")
    pdf.ln(4)
    pdf.pair(labels["method"], mails.method_name(invoice.method, invoice.locale))
    if invoice.payment_reference:
        pdf.pair(labels["reference"], invoice.payment_reference)
    instructions = invoice.instructions
    if invoice.kind == InvoiceKind.PROFORMA and instructions:
        pdf.ln(4)
        pdf.text_line(labels["pay_to"], bold=True)
        pdf.pair(labels["beneficiary"], str(instructions.get("beneficiary", "")))
        pdf.pair("IBAN", str(instructions.get("iban", "")))
        pdf.pair("BIC", str(instructions.get("bic", "")))
        if instructions.get("bank_name"):
            pdf.pair(labels["bank"], str(instructions["bank_name"]))
        pdf.pair(labels["reference"], str(instructions.get("reference_printed", "")))
        pdf.text_line(labels["quote"], size=9)
    if invoice.kind == InvoiceKind.PROFORMA:
        pdf.ln(4)
        pdf.text_line(labels["proforma_note"], size=9)
    return bytes(pdf.output())


def write(session: Session, invoice_id: object, out: object) -> dict[str, Any]:
    """`invoices pdf ID --out FILE`: write the PDF; returns {path, bytes}."""
    if not isinstance(out, str) or not out.strip():
        raise ValidationError("out", "is required (a file path)")
    data = render(get(session, invoice_id))
    path = Path(out.strip()).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise ValidationError("out", f"cannot write {str(path)[:120]!r}: {exc.strerror}") from None
    return {"path": str(path.resolve()), "bytes": len(data)}


def attachment(uow: UnitOfWork, ref: str) -> Attachment:
    """The mail outbox's renderer `invoice_pdf` (installed by worker/wiring.py); `ref` is
    the invoice id."""
    invoice = get(uow.session, ref)
    return Attachment(f"{invoice.number}.pdf", "application/pdf", render(invoice))
