"""``d``: pick the input and output devices (PortAudio's list); problems show inside."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from s2s_tui.audio import AudioUnavailable, list_devices


class DevicesScreen(ModalScreen[tuple[str, int] | None]):
    """Dismisses with ("input"|"output", device index), or None."""

    BINDINGS = [Binding("escape", "dismiss_none", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="devices"):
            yield Label("[b]Audio devices[/b]  (enter picks, esc closes)")
            try:
                devices = list_devices()
                error = "" if devices else "No audio devices: PortAudio sees no sound card."
            except AudioUnavailable as exc:
                devices, error = [], str(exc)
            options = OptionList(id="device-list")
            for d in devices:
                if d.inputs:
                    options.add_option(Option(f"mic      {d.index:3d}  {d.name} ({d.default_rate:.0f} Hz)"
                                              + ("  [default]" if d.is_default_input else ""), id=f"input:{d.index}"))
                if d.outputs:
                    options.add_option(Option(f"speaker  {d.index:3d}  {d.name} ({d.default_rate:.0f} Hz)"
                                              + ("  [default]" if d.is_default_output else ""), id=f"output:{d.index}"))
            if error:
                yield Label(error, id="devices-error")
            yield options

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        kind, index = str(event.option.id).split(":")
        self.dismiss((kind, int(index)))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
