"""Model cards from recorded measurements (`vadasm card`)."""

from vadasm.card.render import CARD_MARKER, hardware_summary, render_card, write_card

__all__ = ["CARD_MARKER", "hardware_summary", "render_card", "write_card"]
