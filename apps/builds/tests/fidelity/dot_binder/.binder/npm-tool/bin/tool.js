#!/usr/bin/env node
console.log("npm tool ran");
