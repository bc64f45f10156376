// The rules editor's line numbers: one per line of the textarea, scrolled with it.
(function () {
  const area = document.querySelector(".numbered textarea");
  const gutter = document.querySelector(".numbered .gutter");
  if (!area || !gutter) return;
  const number = () => {
    const lines = area.value.split("\n").length;
    gutter.textContent = Array.from({ length: lines }, (_, i) => i + 1).join("\n");
    gutter.scrollTop = area.scrollTop;
  };
  area.addEventListener("input", number);
  area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
  number();
})();
