"""A camt.053.001.08 statement writer for tests and the benchmark."""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import escape

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
<BkToCstmrStmt><GrpHdr><MsgId>STMT-1</MsgId><CreDtTm>2026-11-30T10:00:00</CreDtTm></GrpHdr>
<Stmt><Id>1</Id><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
"""
TAIL = "</Stmt></BkToCstmrStmt></Document>\n"


def entry(
    ref: str,
    amount: str,
    memo: str,
    *,
    currency: str = "EUR",
    debit: bool = False,
    structured: str | None = None,
) -> str:
    strd = (
        f"<Strd><CdtrRefInf><Ref>{escape(structured)}</Ref></CdtrRefInf></Strd>"
        if structured
        else ""
    )
    return (
        f'<Ntry><Amt Ccy="{currency}">{amount}</Amt>'
        f"<CdtDbtInd>{'DBIT' if debit else 'CRDT'}</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>"
        "<BookgDt><Dt>2026-11-30</Dt></BookgDt><ValDt><Dt>2026-11-30</Dt></ValDt>"
        f"<AcctSvcrRef>{escape(ref)}</AcctSvcrRef>"
        f"<NtryDtls><TxDtls><RmtInf>{strd}<Ustrd>{escape(memo)}</Ustrd></RmtInf></TxDtls></NtryDtls>"
        "</Ntry>\n"
    )


def statement(entries: Iterable[str]) -> str:
    return HEAD + "".join(entries) + TAIL
