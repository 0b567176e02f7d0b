// The recorder page's own script: start the player on the recording named
// by #player's data-src (the page allows no inline script).
document.addEventListener("DOMContentLoaded", function () {
  var el = document.getElementById("player");
  if (el) {
    AsciinemaPlayer.create(el.dataset.src, el, { autoPlay: true, preload: true, fit: "width" });
  }
});
