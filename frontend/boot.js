// Starts the dashboard. A file of its own, not an inline <script>: the cloud's
// Content-Security-Policy allows scripts only from its own origin.
import init from '/stayopen_frontend.js';
init();
