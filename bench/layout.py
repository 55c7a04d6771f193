"""How a case's model is split over devices: tensor parallel (tp) x data parallel (dp).

Cases and records carry it as the plain dict {"tp": n, "dp": m} (it crosses process boundaries as
JSON); code reads it through Layout.of, so the dict's defaults live in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    dp: int = 1

    @classmethod
    def of(cls, mesh: "dict | Layout | None") -> "Layout":
        """A case's layout dict (missing axes are 1), a Layout, or None (one device)."""
        if mesh is None:
            return cls()
        if isinstance(mesh, Layout):
            return mesh
        return cls(mesh.get("tp", 1), mesh.get("dp", 1))

    @property
    def devices(self) -> int:
        return self.tp * self.dp

    def as_dict(self) -> dict:
        return {"tp": self.tp, "dp": self.dp}

    def __str__(self) -> str:
        return f"tp={self.tp},dp={self.dp}"
