"""UserError: the one way bad input is reported (what, where, how to fix)."""


class UserError(Exception):
  """An error caused by the user's input; main.py prints it as one line and exits 1."""

  def __init__(self, what: str, where: str = "", fix: str = ""):
    self.what, self.where, self.fix = what, where, fix
    super().__init__(self.line())

  def line(self) -> str:
    line = f"error: {self.what}"
    if self.where:
      line += f" [{self.where}]"
    if self.fix:
      line += f"; fix: {self.fix}"
    return line.replace("\n", " ")
